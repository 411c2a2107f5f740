"""Word vocabulary and tokenizer with the four special tokens every sequence model here uses."""
import json
import os
import re
from collections import Counter
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
_TOKEN = re.compile(r"<[a-z]+>|[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> List[str]:
    """Lower-case words, numbers and single punctuation marks; special tokens stay whole."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """word <-> id. Ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; words follow in the
    order given (``build`` sorts by count, then alphabetically, so it is deterministic)."""

    def __init__(self, words: Iterable[str] = ()):
        self.itos: List[str] = list(SPECIALS)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"words must be non-empty strings, got {w!r}")
            if w not in self.stoi:
                self.stoi[w] = len(self.itos)
                self.itos.append(w)

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Iterable[str], *, min_count: int = 1, max_size: Optional[int] = None) -> "Vocabulary":
        counts = Counter(t for s in sentences for t in tokenize(s) if t not in SPECIALS)
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size is not None else words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    @property
    def words(self) -> List[str]:
        return self.itos[len(SPECIALS):]

    def id(self, word: str) -> int:
        return self.stoi.get(word, self.unk_id)

    def encode(self, text: str, *, bos: bool = True, eos: bool = True) -> List[int]:
        ids = [self.id(t) for t in tokenize(text)]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str], *, max_len: Optional[int] = None, bos: bool = True,
                     eos: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (ids[B, L] int64 padded with ``<pad>``, lengths[B]). Longer sequences are cut at
        ``max_len`` (their ``<eos>`` is then lost)."""
        seqs = [self.encode(t, bos=bos, eos=eos) for t in texts]
        if max_len is not None:
            if max_len <= 0:
                raise ValueError(f"max_len must be > 0, got {max_len}")
            seqs = [s[:max_len] for s in seqs]
        length = max_len if max_len is not None else max((len(s) for s in seqs), default=0)
        out = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return out, torch.tensor([len(s) for s in seqs], dtype=torch.long)

    def decode(self, ids, *, strip: bool = True) -> str:
        """ids -> text. ``strip``: stop at the first ``<eos>`` and drop ``<bos>``/``<pad>``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        words = []
        for i in ids:
            if not 0 <= i < len(self.itos):
                raise ValueError(f"ids holds {i}, outside the vocabulary of {len(self.itos)} tokens")
            w = self.itos[i]
            if strip:
                if w == EOS:
                    break
                if w in (BOS, PAD):
                    continue
            words.append(w)
        return " ".join(words)

    def decode_batch(self, ids: torch.Tensor, *, strip: bool = True) -> List[str]:
        return [self.decode(row, strip=strip) for row in ids.tolist()]

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"format": "fastpapers-vocab", "tokens": self.itos}, f)
        return path

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            with open(path) as f:
                data = json.load(f)
            tokens = data["tokens"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"vocabulary file {path} is corrupt: {exc}") from exc
        if list(tokens[:len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"vocabulary file {path} does not start with the special tokens {SPECIALS}")
        return cls(tokens[len(SPECIALS):])

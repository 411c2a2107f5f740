"""Rule-based "ambiguous transduction" pairs, the offline proxy task for MIXER.

Each source is a random string of ``min_len..max_len`` symbols from a ``vocab_size``-symbol
alphabet; its target is, at random, the source *reversed* or the source *sorted*. Nothing in
the source says which, so a model trained with cross-entropy and decoded greedily tends to mix
the two modes, while sequence-level training against the best of both references (the
``references`` field) can commit to one. Deterministic from the seed.
"""
from typing import Optional

import torch
from torch.utils.data import Dataset

from .vocab import Vocabulary

REVERSE, SORT = 0, 1


def transduction_vocabulary(vocab_size: int = 12) -> Vocabulary:
    """Special tokens, then the symbols ``s0 .. s{vocab_size-1}`` (ids 4.., sorted by id = by index)."""
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
    return Vocabulary([f"s{i}" for i in range(vocab_size)])


class AmbiguousTransduction(Dataset):
    """``n`` pairs. Item: ``source`` (L,), ``target`` (L,) and ``references`` (2, L) int64 ids with
    ``<bos>``/``<eos>``, padded with ``<pad>`` to L = max_len + 2 (references[0] = reversed,
    references[1] = sorted; target is one of them); ``mode`` (0 reverse, 1 sort); ``length``.
    Strings: ``dataset.vocab.decode(ids)``."""

    def __init__(self, n: int, *, vocab_size: int = 12, min_len: int = 5, max_len: int = 8, seed: int = 0,
                 p_reverse: float = 0.5, vocab: Optional[Vocabulary] = None):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
            raise ValueError(f"min_len and max_len must be ints with 1 <= min_len <= max_len, got {min_len}, {max_len}")
        if not 0.0 <= p_reverse <= 1.0:
            raise ValueError(f"p_reverse must be in [0, 1], got {p_reverse!r}")
        self.vocab = vocab or transduction_vocabulary(vocab_size)
        first = self.vocab.id("s0")
        g = torch.Generator().manual_seed(seed)
        L = max_len + 2
        self.length = torch.randint(min_len, max_len + 1, (n,), generator=g)
        symbols = torch.randint(vocab_size, (n, max_len), generator=g) + first
        self.mode = (torch.rand(n, generator=g) >= p_reverse).long()
        pos = torch.arange(max_len)[None]
        valid = pos < self.length[:, None]
        body = torch.where(valid, symbols, torch.full_like(symbols, self.vocab.pad_id))
        # Reverse the first `length` symbols of every row: index length-1-j for j < length.
        ridx = (self.length[:, None] - 1 - pos).clamp(min=0)
        rev = torch.where(valid, body.gather(1, ridx), body)
        # Sort with padding last: pads become a value above every symbol while sorting.
        big = first + vocab_size
        srt = torch.where(valid, body, torch.full_like(body, big)).sort(1).values
        srt = torch.where(valid, srt, body)

        def frame(x):
            out = torch.full((n, L), self.vocab.pad_id, dtype=torch.long)
            out[:, 0] = self.vocab.bos_id
            out[:, 1:max_len + 1] = x
            out[torch.arange(n), self.length + 1] = self.vocab.eos_id
            return out

        self.source = frame(body)
        self.references = torch.stack([frame(rev), frame(srt)], 1)
        self.target = self.references[torch.arange(n), self.mode]

    def __len__(self):
        return self.source.shape[0]

    def __getitem__(self, i):
        return {"source": self.source[i], "target": self.target[i], "references": self.references[i],
                "mode": self.mode[i], "length": self.length[i]}

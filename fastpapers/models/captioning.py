"""Training, decoding and evaluation of the semantic-attention captioner.

Training runs through the shared :class:`fastpapers.train.Trainer` (checkpoints, resume,
logging); decoding through the shared beam search engine :func:`fastpapers.ops.beam_search`.
A trained run folder holds ``checkpoint.pt`` (the trainer's) and ``captioner.json`` (the model
configuration and the vocabulary), which is all ``eval`` and ``predict`` need.
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from .semantic_attention import (SemanticAttentionCaptioner, SemanticAttentionConfig, attribute_targets,
                                 build_attribute_vocab, semantic_attention_loss)

BUNDLE = "captioner.json"
MODULE = "captioner"


@dataclass
class CaptionCorpus:
    """Images with their reference captions.

    ``images``: (N, C, H, W) float in [0, 1] or uint8 in [0, 255]; ``captions``: per image, a
    non-empty list of reference caption strings."""
    images: torch.Tensor
    captions: List[List[str]]

    def __post_init__(self):
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise ValueError(f"images must be an (N, C, H, W) tensor, got "
                             f"{getattr(self.images, 'shape', type(self.images).__name__)}")
        if len(self.captions) != self.images.shape[0]:
            raise ValueError(f"captions must hold one list per image ({self.images.shape[0]}), got {len(self.captions)}")
        if any(len(refs) == 0 for refs in self.captions):
            raise ValueError("captions must hold at least one reference caption per image")

    def __len__(self):
        return self.images.shape[0]

    def image(self, i) -> torch.Tensor:
        x = self.images[i]
        return x.float() / 255 if x.dtype == torch.uint8 else x.float()

    def float_images(self) -> torch.Tensor:
        return self.images.float() / 255 if self.images.dtype == torch.uint8 else self.images.float()

    def subset(self, index: Sequence[int]) -> "CaptionCorpus":
        index = list(index)
        return CaptionCorpus(self.images[index], [self.captions[i] for i in index])


def shapes_corpus(n: int, *, size: int = 48, split: str = "train", seed: int = 0) -> CaptionCorpus:
    """Shapes-world scenes of 2–3 shapes with their relational caption (one reference each);
    the splits are generated from different seeds, so "test" scenes are unseen in "train"."""
    from ..data import ShapesCaptions

    ds = ShapesCaptions(n, size=size, min_objects=2, max_objects=3, split=split, seed=seed)
    return CaptionCorpus(ds.images, [[c] for c in ds.captions])


def coco_corpus(annotations: str, image_dir: str, *, size: int = 64) -> CaptionCorpus:
    """A COCO captions JSON and its image folder, every image resized to ``size`` × ``size``."""
    from ..data import CocoCaptions

    ds = CocoCaptions(annotations, image_dir, size=size)
    if len(ds) == 0:
        raise ValueError(f"{annotations} holds no image with a caption")
    images, caps = zip(*(ds[i] for i in range(len(ds))))
    return CaptionCorpus((torch.stack(images) * 255 + 0.5).to(torch.uint8), [list(c) for c in caps])


def split_corpus(corpus: CaptionCorpus, val_fraction: float, seed: int = 0):
    """(train, held-out) split of the images, a seeded permutation."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(corpus)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training image out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return corpus.subset(sorted(perm[n_val:])), corpus.subset(sorted(perm[:n_val]))


class CaptionPairs(Dataset):
    """One item per (image, reference caption): ``(image, ids[L], attribute targets[A])`` with
    ids = bos, words, eos, pad…; the attribute targets come from all of the image's references."""

    def __init__(self, corpus: CaptionCorpus, vocab, attribute_ids: Sequence[int]):
        self.corpus = corpus
        self.pairs = [(i, j) for i, refs in enumerate(corpus.captions) for j in range(len(refs))]
        length = max(len(vocab.encode(c)) for refs in corpus.captions for c in refs)
        self.ids = [vocab.encode_batch(refs, max_len=length)[0] for refs in corpus.captions]
        attr = torch.as_tensor(list(attribute_ids), dtype=torch.long)
        self.targets = torch.stack([attribute_targets(rows[None], attr)[0] for rows in self.ids])

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        i, j = self.pairs[k]
        return self.corpus.image(i), self.ids[i][j], self.targets[i]


def make_model(vocab, train_corpus: CaptionCorpus, *, num_attributes: int = 24, **config) -> SemanticAttentionCaptioner:
    """A captioner whose attribute vocabulary is the ``num_attributes`` most common
    non-stopword words of the training captions."""
    from ..data import tokenize

    words = build_attribute_vocab((tokenize(c) for refs in train_corpus.captions for c in refs), num_attributes)
    words = [w for w in words if w in vocab]
    cfg = SemanticAttentionConfig(vocab_size=len(vocab), attribute_ids=[vocab.id(w) for w in words],
                                  pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                                  image_channels=train_corpus.images.shape[1], **config)
    return SemanticAttentionCaptioner(cfg)


def save_bundle(model: SemanticAttentionCaptioner, vocab, out_dir: str, image_size: int) -> str:
    """Write what eval/predict need besides the weights: config, vocabulary, image size."""
    path = os.path.join(out_dir, BUNDLE)
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"format": "fastpapers-captioner", "config": model.config.to_dict(), "vocab": vocab.itos,
                   "image_size": int(image_size)}, f, indent=1)
    return path


def train(model: SemanticAttentionCaptioner, vocab, corpus: CaptionCorpus, *, steps: int, out_dir: str,
          batch_size: int = 32, lr: float = 2e-3, seed: int = 0, device="cpu", resume: bool = False,
          grad_clip: float = 5.0, log_every: int = 50, checkpoint_every: int = 500,
          eval_fn=None, eval_every: int = 0, progress: bool = True) -> Dict[str, float]:
    """Train ``model`` on ``corpus`` with Adam through the shared Trainer; returns the last
    logged metrics. The loss is :func:`semantic_attention_loss` (caption cross-entropy, the
    attention regulariser when on, and the attribute detector's BCE)."""
    from ..train import Trainer

    data = CaptionPairs(corpus, vocab, model.config.attribute_ids)
    opt = {MODULE: torch.optim.Adam(model.parameters(), lr=lr)}
    pad = model.config.pad_id

    def step(tr, batch):
        images, caps, targets = batch
        # Pairs are padded to the longest caption of the corpus; drop the columns that are
        # padding in the whole batch.
        caps = caps[:, :int((caps != pad).sum(1).max())]
        losses = semantic_attention_loss(model(images, caps), caps, model.config, targets)
        tr.step(MODULE, losses["loss"])
        return losses

    save_bundle(model, vocab, out_dir, corpus.images.shape[-1])
    tr = Trainer({MODULE: model}, opt, step, data=data, batch_size=min(batch_size, len(data)),
                 out_dir=out_dir, seed=seed, device=device, grad_clip=grad_clip, log_every=log_every,
                 checkpoint_every=checkpoint_every, eval_fn=eval_fn, eval_every=eval_every, progress=progress)
    return tr.fit(steps, resume=resume)


def load(run_dir_or_checkpoint: str, device="cpu"):
    """(model, vocab, image_size) from a run folder (or its checkpoint.pt) written by :func:`train`."""
    from ..data import Vocabulary
    from ..data.vocab import SPECIALS
    from ..train import load_checkpoint

    path = run_dir_or_checkpoint
    ckpt = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    bundle = os.path.join(os.path.dirname(os.path.abspath(ckpt)), BUNDLE)
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if not os.path.isfile(bundle):
        raise FileNotFoundError(f"{BUNDLE} not found next to the checkpoint ({bundle}); "
                                "it is written by `fastpapers caption train`")
    try:
        with open(bundle) as f:
            meta = json.load(f)
        config = SemanticAttentionConfig(**meta["config"])
        tokens, image_size = meta["vocab"], int(meta["image_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{bundle} is corrupt or not a captioner bundle: {exc}") from exc
    if list(tokens[:len(SPECIALS)]) != list(SPECIALS):
        raise ValueError(f"{bundle} holds a vocabulary without the special tokens {SPECIALS}")
    model = SemanticAttentionCaptioner(config)
    load_checkpoint(ckpt, {MODULE: model})
    return model.to(device).eval(), Vocabulary(tokens[len(SPECIALS):]), image_size


@torch.no_grad()
def decode(model: SemanticAttentionCaptioner, images: torch.Tensor, *, num_beams: int = 3, max_length: int = 30,
           attributes: Optional[torch.Tensor] = None, batch_size: int = 64) -> dict:
    """Caption ``images`` with beam search (the shared engine; ``num_beams=1`` is greedy).

    Returns ``sequences`` (list of id lists without bos/eos/pad), ``attributes`` (B, k) and
    ``attribute_scores`` (B, k) or None."""
    from ..ops import beam_search

    cfg = model.config
    was_training = model.training
    model.eval()
    seqs, attrs, scores = [], [], []
    try:
        for s in range(0, images.shape[0], batch_size):
            chunk = images[s:s + batch_size]
            init = model.init_state(chunk, None if attributes is None else attributes[s:s + batch_size])
            start = torch.full((chunk.shape[0], 1), cfg.bos_id, dtype=torch.long, device=chunk.device)
            out = beam_search(model.step_fn, start, init["state"], num_beams=num_beams, max_length=max_length,
                              eos_token_id=cfg.eos_id, pad_token_id=cfg.pad_id,
                              reorder_state=model.reorder_state)
            for row in out.sequences.tolist():
                words = []
                for t in row[1:]:
                    if t in (cfg.eos_id, cfg.pad_id):
                        break
                    words.append(t)
                seqs.append(words)
            attrs.append(init["attributes"])
            if init["attribute_scores"] is not None:
                scores.append(init["attribute_scores"])
    finally:
        model.train(was_training)
    return {"sequences": seqs, "attributes": torch.cat(attrs),
            "attribute_scores": torch.cat(scores) if scores else None}


@torch.no_grad()
def explain(model: SemanticAttentionCaptioner, images: torch.Tensor, sequences: List[List[int]],
            attributes: torch.Tensor) -> dict:
    """α and β of each generated word (eos included) over the attended attributes: a
    teacher-forced pass over the model's own captions, which reproduces the decoder's steps."""
    cfg = model.config
    length = 2 + max(len(s) for s in sequences)
    caps = torch.full((len(sequences), length), cfg.pad_id, dtype=torch.long, device=images.device)
    for i, s in enumerate(sequences):
        caps[i, :len(s) + 2] = torch.tensor([cfg.bos_id, *s, cfg.eos_id])
    out = model(images, caps, attributes=attributes)
    return {"alpha": out["alpha"], "beta": out["beta"]}


# The paper's ablation (Table 2 of You et al.): name -> model switches.
ABLATION = [
    ("CNN-LSTM", dict(input_attention=False, output_attention=False, regularize=False)),
    ("+ input attention", dict(input_attention=True, output_attention=False, regularize=False)),
    ("+ output attention", dict(input_attention=False, output_attention=True, regularize=False)),
    ("input + output", dict(input_attention=True, output_attention=True, regularize=False)),
    ("input + output + g", dict(input_attention=True, output_attention=True, regularize=True)),
]


def caption_scores(references: List[List[str]], hypotheses: List[str], *, meteor: bool = True) -> Dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D, and METEOR when ``meteor`` and Java runs (it starts a JVM
    that loads METEOR's paraphrase tables: minutes on a busy machine). References are
    tokenised and lower-cased like the vocabulary; hypotheses are space-separated tokens."""
    from ..data import tokenize
    from ..metrics import Meteor, cider_d, corpus_bleu, meteor_available

    refs = [[" ".join(tokenize(c)) for c in rs] for rs in references]
    scores = {f"BLEU-{n}": v for n, v in zip(range(1, 5), corpus_bleu(hypotheses, refs).values())}
    scores["CIDEr"] = cider_d(hypotheses, refs)[0]
    if meteor and meteor_available():
        with Meteor() as m:
            scores["METEOR"] = m.score(hypotheses, refs)[0]
    return scores


@torch.no_grad()
def evaluate(model: SemanticAttentionCaptioner, vocab, corpus: CaptionCorpus, *, num_beams: int = 3,
             max_length: int = 30, device="cpu", batch_size: int = 64, meteor: bool = True) -> Dict[str, float]:
    """Caption every image of ``corpus`` and score against its references: the caption
    metrics, plus ``attr_recall`` (the share of the references' attribute words that the
    generated caption contains) and ``detector_precision`` (the share of the top-k detected
    attributes that occur in the references)."""
    from ..data import tokenize

    images = corpus.float_images().to(device)
    out = decode(model, images, num_beams=num_beams, max_length=max_length, batch_size=batch_size)
    hyps = [" ".join(vocab.itos[t] for t in s) for s in out["sequences"]]
    scores = caption_scores(corpus.captions, hyps, meteor=meteor)
    attr_words = {vocab.itos[i] for i in model.config.attribute_ids}
    found = total = hit = k = 0
    for refs, hyp, top in zip(corpus.captions, hyps, out["attributes"].tolist()):
        ref_words = {w for c in refs for w in tokenize(c)}
        wanted = ref_words & attr_words
        found += len(wanted & set(hyp.split()))
        total += len(wanted)
        hit += sum(vocab.itos[t] in ref_words for t in top)
        k += len(top)
    scores["attr_recall"] = found / max(total, 1)
    scores["detector_precision"] = hit / max(k, 1)
    return scores


def results_table(rows) -> str:
    """Markdown table of ``[(name, scores)]``."""
    keys = [k for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "CIDEr", "attr_recall",
                        "detector_precision", "train_s") if any(k in s for _, s in rows)]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, s in rows:
        lines.append(f"| {name} | " + " | ".join(
            ("–" if k not in s else f"{s[k]:.0f}" if k == "train_s" else f"{s[k]:.3f}") for k in keys) + " |")
    return "\n".join(lines) + "\n"

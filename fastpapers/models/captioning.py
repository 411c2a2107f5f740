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

    ``images``: (N, C, H, W) floats in [0, 1]; ``captions``: per image, a list of tokenised
    reference captions (lists of words)."""
    images: torch.Tensor
    captions: List[List[List[str]]]

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


class CaptionPairs(Dataset):
    """One item per (image, reference caption): ``(image, ids[L], attribute targets[A])`` with
    ids = bos, words, eos, pad…; the attribute targets come from all of the image's references."""

    def __init__(self, corpus: CaptionCorpus, vocab, attribute_ids: Sequence[int]):
        self.corpus = corpus
        self.pairs = [(i, j) for i, refs in enumerate(corpus.captions) for j in range(len(refs))]
        encoded = [[vocab.encode(c) for c in refs] for refs in corpus.captions]
        length = 2 + max(len(c) for refs in encoded for c in refs)
        self.ids = []
        for refs in encoded:
            rows = torch.full((len(refs), length), vocab.pad_id, dtype=torch.long)
            for j, c in enumerate(refs):
                rows[j, :len(c) + 2] = torch.tensor([vocab.bos_id, *c, vocab.eos_id])
            self.ids.append(rows)
        attr = torch.as_tensor(list(attribute_ids), dtype=torch.long)
        self.targets = torch.stack([attribute_targets(rows[None], attr)[0] for rows in self.ids])

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        i, j = self.pairs[k]
        return self.corpus.images[i], self.ids[i][j], self.targets[i]


def make_model(vocab, train_corpus: CaptionCorpus, *, num_attributes: int = 24, **config) -> SemanticAttentionCaptioner:
    """A captioner whose attribute vocabulary is the ``num_attributes`` most common
    non-stopword words of the training captions."""
    words = build_attribute_vocab((c for refs in train_corpus.captions for c in refs), num_attributes)
    words = [w for w in words if w in vocab]
    cfg = SemanticAttentionConfig(vocab_size=len(vocab), attribute_ids=[vocab[w] for w in words],
                                  pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                                  image_channels=train_corpus.images.shape[1], **config)
    return SemanticAttentionCaptioner(cfg)


def save_bundle(model: SemanticAttentionCaptioner, vocab, out_dir: str) -> str:
    path = os.path.join(out_dir, BUNDLE)
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"config": model.config.to_dict(), "vocab": vocab.to_list()}, f, indent=1)
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

    save_bundle(model, vocab, out_dir)
    tr = Trainer({MODULE: model}, opt, step, data=data, batch_size=min(batch_size, len(data)),
                 out_dir=out_dir, seed=seed, device=device, grad_clip=grad_clip, log_every=log_every,
                 checkpoint_every=checkpoint_every, eval_fn=eval_fn, eval_every=eval_every, progress=progress)
    return tr.fit(steps, resume=resume)


def load(run_dir_or_checkpoint: str, device="cpu"):
    """(model, vocab) from a run folder (or its checkpoint.pt) written by :func:`train`."""
    from ..train import load_checkpoint
    from ..data.text import Vocab

    path = run_dir_or_checkpoint
    ckpt = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    bundle = os.path.join(os.path.dirname(os.path.abspath(ckpt)), BUNDLE)
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if not os.path.isfile(bundle):
        raise FileNotFoundError(f"{BUNDLE} not found next to the checkpoint ({bundle}); "
                                "it is written by `fastpapers caption train`")
    with open(bundle) as f:
        meta = json.load(f)
    model = SemanticAttentionCaptioner(SemanticAttentionConfig(**meta["config"]))
    load_checkpoint(ckpt, {MODULE: model})
    return model.to(device).eval(), Vocab.from_list(meta["vocab"])


@torch.no_grad()
def decode(model: SemanticAttentionCaptioner, images: torch.Tensor, *, num_beams: int = 3, max_length: int = 20,
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

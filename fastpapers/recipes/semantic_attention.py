"""Recipe: image captioning with semantic attention (You, Jin, Wang, Fang and Luo, CVPR 2016).

Data: shapes-world scenes of 2-3 shapes with a relational caption (the default), or a COCO
captions JSON (``Config.data``) with its image folder. The attribute vocabulary is the
``attributes`` most frequent non-stopword words of the training captions. Training runs the
shared :class:`fastpapers.train.Trainer` (Adam; the loss is
:func:`fastpapers.models.semantic_attention.semantic_attention_loss`); decoding the shared
beam search. :func:`evaluate` gives BLEU-1..4, CIDEr-D (METEOR with Java), the attribute
recall of the captions and the detector's precision; :data:`ABLATION` is the paper's Table 2.

A run folder (``fastpapers.train.rundir``, paper ``semantic_attention``) holds run.json (the
whole :class:`Config`), checkpoint.pt, metrics and ``captioner.json`` (the model
configuration, the vocabulary and the image side). Folders written before run.json existed
(``captioner.json`` + checkpoint) still load.
"""
import os
import time
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..data.captions import CaptionCorpus, coco_corpus, shapes_corpus, split_corpus
from ..metrics.captions import caption_scores
from ..models.semantic_attention import (ENCODERS, SemanticAttentionCaptioner, SemanticAttentionConfig,
                                         attribute_targets, build_attribute_vocab, semantic_attention_loss)
from ..train.rundir import RUN_FILE, Run
from ._common import Loaded, RecipeConfig, find_run, open_run, stored_config

__all__ = ["PAPER", "Config", "ABLATION", "corpora", "vocabulary", "build", "make_model", "fit", "train", "load", "predict",
           "explain", "evaluate", "ablation", "results_table", "CaptionPairs"]

PAPER = "semantic_attention"
MODULE = "captioner"
BUNDLE = "captioner.json"

# The paper's ablation (Table 2 of You et al.): name -> model switches.
ABLATION = [
    ("CNN-LSTM", dict(input_attention=False, output_attention=False, regularize=False)),
    ("+ input attention", dict(input_attention=True, output_attention=False, regularize=False)),
    ("+ output attention", dict(input_attention=False, output_attention=True, regularize=False)),
    ("input + output", dict(input_attention=True, output_attention=True, regularize=False)),
    ("input + output + g", dict(input_attention=True, output_attention=True, regularize=True)),
]


@dataclass
class Config(RecipeConfig):
    """The captioner's settings: data, model switches (the paper's), training."""
    # data
    data: Optional[str] = None          # COCO captions JSON; None: generated shapes-world scenes
    images: Optional[str] = None        # folder of the JSON's images (default: the JSON's folder)
    scenes: int = 3000
    size: int = 32
    val_fraction: float = 0.1
    # model
    input_attention: bool = True
    output_attention: bool = True
    regularize: bool = True
    top_k: int = 5
    attributes: int = 24
    dim: int = 128
    reg_p: float = 2.0
    reg_q: float = 0.5
    reg_weight: float = 1.0
    encoder: str = "cnn"
    # training
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    checkpoint_every: int = 500

    PAPER: ClassVar[str] = PAPER
    RESUMABLE: ClassVar[tuple] = ("steps", "checkpoint_every")
    FLAGS: ClassVar[dict] = {"encoder": "--pretrained-encoder", "input_attention": "--no-input-attention",
                             "output_attention": "--no-output-attention", "regularize": "--no-regularizer"}

    def __post_init__(self):
        for name in ("scenes", "size", "top_k", "attributes", "dim", "steps", "batch_size"):
            self.check_int(name)
        if self.data is None:
            self.check_int("scenes", 2)
        self.check_float("val_fraction", 0.0, 1.0, open_high=True)
        self.check_float("lr")
        self.check_int("checkpoint_every", 0)
        self.check_choice("encoder", ENCODERS)

    def model_options(self) -> dict:
        return dict(num_attributes=self.attributes, top_k=self.top_k, dim=self.dim,
                    input_attention=self.input_attention, output_attention=self.output_attention,
                    regularize=self.regularize, reg_p=self.reg_p, reg_q=self.reg_q, reg_weight=self.reg_weight,
                    encoder=self.encoder)


def corpora(cfg: Config):
    """(train, held-out) corpora: generated shapes-world splits, or the COCO JSON split by image."""
    if cfg.data is None:
        n_val = max(1, int(round(cfg.scenes * cfg.val_fraction)))
        return (shapes_corpus(cfg.scenes, size=cfg.size, split="train", seed=cfg.seed),
                shapes_corpus(n_val, size=cfg.size, split="test", seed=cfg.seed))
    image_dir = cfg.images or os.path.dirname(os.path.abspath(cfg.data))
    return split_corpus(coco_corpus(cfg.data, image_dir, size=cfg.size), cfg.val_fraction, seed=cfg.seed)


def vocabulary(corpus: CaptionCorpus, shapes: bool):
    """The shapes world's fixed vocabulary, or one built from the corpus' captions."""
    from ..data import Vocabulary, shapes_vocabulary

    if shapes:
        return shapes_vocabulary()
    return Vocabulary.build([c for refs in corpus.captions for c in refs])


def build(cfg: Config, *, data=None) -> Dict[str, torch.nn.Module]:
    """Fresh networks for ``cfg`` (by checkpoint name): the captioner, its attribute vocabulary
    drawn from the training captions of ``data`` = (train, held-out) or of :func:`corpora`."""
    train_corpus, _ = data if data is not None else corpora(cfg)
    vocab = vocabulary(train_corpus, cfg.data is None and data is None)
    return {MODULE: make_model(vocab, train_corpus, **cfg.model_options())}


def make_model(vocab, train_corpus: CaptionCorpus, *, num_attributes: int = 24, **config) -> SemanticAttentionCaptioner:
    """A fresh captioner whose attribute vocabulary is the ``num_attributes`` most common
    non-stopword words of the training captions (``config``: SemanticAttentionConfig fields)."""
    from ..data import tokenize

    words = build_attribute_vocab((tokenize(c) for refs in train_corpus.captions for c in refs), num_attributes)
    words = [w for w in words if w in vocab]
    mcfg = SemanticAttentionConfig(vocab_size=len(vocab), attribute_ids=[vocab.id(w) for w in words],
                                   pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                                   image_channels=train_corpus.images.shape[1], **config)
    return SemanticAttentionCaptioner(mcfg)


class CaptionPairs(Dataset):
    """One item per (image, reference caption): ``(image, ids[L], attribute targets[A])`` with
    ids = bos, words, eos, pad...; the attribute targets come from all of the image's references."""

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


def save_bundle(model: SemanticAttentionCaptioner, vocab, out_dir: str, image_size: int) -> str:
    """Write what eval/predict need besides the weights: config, vocabulary, image size."""
    from ..train.checkpoint import atomic_save_json
    return atomic_save_json({"format": "fastpapers-captioner", "config": model.config.to_dict(), "vocab": vocab.itos,
                             "image_size": int(image_size)}, os.path.join(out_dir, BUNDLE))


def fit(model: SemanticAttentionCaptioner, vocab, corpus: CaptionCorpus, *, steps: int, out_dir: str,
        batch_size: int = 32, lr: float = 2e-3, seed: int = 0, device="cpu", resume: bool = False,
        grad_clip: float = 5.0, log_every: int = 50, checkpoint_every: int = 500,
        eval_fn=None, eval_every: int = 0, progress: bool = True) -> Dict[str, float]:
    """Train ``model`` on ``corpus`` with Adam through the shared Trainer into ``out_dir``;
    returns the last logged metrics. The loss is :func:`semantic_attention_loss` (caption
    cross-entropy, the attention regulariser when on, and the attribute detector's BCE)."""
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


def train(cfg: Config, out: str, *, resume: bool = False, device="cpu", progress: bool = True,
          data=None) -> Run:
    """Train a captioner with ``cfg`` into the run folder ``out``; ``data`` = (train, held-out)
    corpora overrides the ones ``cfg`` describes. Returns the run."""
    from ..train.checkpoint import seed_everything

    run = open_run(out, cfg, resume=resume)
    train_corpus, held_out = data if data is not None else corpora(cfg)
    vocab = vocabulary(train_corpus, cfg.data is None and data is None)
    seed_everything(cfg.seed)
    model = make_model(vocab, train_corpus, **cfg.model_options())
    if progress:
        print(f"{len(train_corpus)} training images, {len(held_out)} held out; vocabulary {len(vocab)}, attributes: "
              + " ".join(vocab.itos[i] for i in model.config.attribute_ids))
    fit(model, vocab, train_corpus, steps=cfg.steps, out_dir=run.path, batch_size=cfg.batch_size, lr=cfg.lr,
        seed=cfg.seed, device=device, resume=resume, checkpoint_every=cfg.checkpoint_every, progress=progress)
    return run


def load(run_dir_or_checkpoint, device="cpu") -> Loaded:
    """The captioner of a run folder (or its checkpoint.pt, or a Run) written by
    :func:`train` / :func:`fit`: ``nets["captioner"]``, ``artefacts["vocab"]`` and
    ``artefacts["image_size"]``; ``config`` is None for a folder :func:`fit` wrote alone."""
    from ..data import Vocabulary
    from ..data.vocab import SPECIALS
    from ..train import load_checkpoint
    from ..train.checkpoint import read_json_file

    path = run_dir_or_checkpoint.path if isinstance(run_dir_or_checkpoint, Run) else os.fspath(run_dir_or_checkpoint)
    ckpt = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    folder = os.path.dirname(os.path.abspath(ckpt))
    bundle = os.path.join(folder, BUNDLE)
    run = config = None
    if os.path.isfile(os.path.join(folder, RUN_FILE)):
        run = find_run(folder, PAPER)
        # A folder converted from the older format (convert_legacy) holds the bundle's fields
        # as its config, not a Config: the bundle below is all loading needs.
        if not _converted(run):
            config = stored_config(run, Config)
    if not os.path.isfile(ckpt):
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if not os.path.isfile(bundle):
        raise FileNotFoundError(f"{BUNDLE} not found next to the checkpoint ({bundle}); "
                                "it is written by `fastpapers semantic_attention train`")
    meta = read_json_file(bundle)
    try:
        mcfg = SemanticAttentionConfig(**meta["config"])
        tokens, image_size = meta["vocab"], int(meta["image_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{bundle} is corrupt or not a captioner bundle: {exc}") from exc
    if list(tokens[:len(SPECIALS)]) != list(SPECIALS):
        raise ValueError(f"{bundle} holds a vocabulary without the special tokens {SPECIALS}")
    model = SemanticAttentionCaptioner(mcfg)
    load_checkpoint(ckpt, {MODULE: model})
    return Loaded(config=config, nets={MODULE: model.to(device).eval()}, path=folder, run=run,
                  device=torch.device(device),
                  artefacts={"vocab": Vocabulary(tokens[len(SPECIALS):]), "image_size": image_size})


def _converted(run) -> bool:
    from ..train.checkpoint import read_json_file
    return bool(read_json_file(run.file(RUN_FILE), what="run.json").get("converted_from"))


@torch.no_grad()
def predict(model: SemanticAttentionCaptioner, images: torch.Tensor, *, num_beams: int = 3, max_length: int = 30,
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


@torch.no_grad()
def evaluate(model: SemanticAttentionCaptioner, vocab, corpus: CaptionCorpus, *, num_beams: int = 3,
             max_length: int = 30, device="cpu", batch_size: int = 64, meteor: bool = True) -> Dict[str, float]:
    """Caption every image of ``corpus`` and score against its references: the caption
    metrics, plus ``attr_recall`` (the share of the references' attribute words that the
    generated caption contains) and ``detector_precision`` (the share of the top-k detected
    attributes that occur in the references)."""
    from ..data import tokenize

    images = corpus.float_images().to(device)
    out = predict(model, images, num_beams=num_beams, max_length=max_length, batch_size=batch_size)
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


def ablation(cfg: Config, out: str, *, device="cpu", num_beams: int = 3, max_length: int = 30,
             meteor: bool = True, progress: bool = True, resume: bool = False) -> List[tuple]:
    """The paper's ablation at one equal budget (``cfg.steps`` each): one run folder per
    variant under ``out``, scored on the held-out split; ``resume`` continues the variants'
    runs from their checkpoints (a finished one is only loaded). Returns ``[(name, scores)]``
    and writes ``out/results.md``."""
    from ..train.checkpoint import seed_everything

    train_corpus, held_out = corpora(cfg)
    vocab = vocabulary(train_corpus, cfg.data is None)
    rows = []
    for name, opts in ABLATION:
        vcfg = Config.from_dict({**cfg.to_dict(), **opts})
        seed_everything(vcfg.seed)
        model = make_model(vocab, train_corpus, **vcfg.model_options())
        print(f"== {name}")
        t0 = time.perf_counter()
        run = open_run(os.path.join(out, name.replace(" ", "_")), vcfg, resume=resume)
        fit(model, vocab, train_corpus, steps=vcfg.steps, out_dir=run.path, batch_size=vcfg.batch_size, lr=vcfg.lr,
            seed=vcfg.seed, device=device, progress=progress, resume=resume, checkpoint_every=vcfg.checkpoint_every)
        seconds = time.perf_counter() - t0
        scores = evaluate(model, vocab, held_out, num_beams=num_beams, max_length=max_length, device=device,
                          meteor=meteor)
        scores["train_s"] = seconds
        print("   " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        rows.append((name, scores))
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(results_table(rows))
    return rows


def results_table(rows) -> str:
    """Markdown table of ``[(name, scores)]``."""
    keys = [k for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "CIDEr", "attr_recall",
                        "detector_precision", "train_s") if any(k in s for _, s in rows)]
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, s in rows:
        lines.append(f"| {name} | " + " | ".join(
            ("–" if k not in s else f"{s[k]:.0f}" if k == "train_s" else f"{s[k]:.3f}") for k in keys) + " |")
    return "\n".join(lines) + "\n"

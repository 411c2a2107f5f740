"""Recipe: MIXER, sequence-level training of an attentive encoder-decoder (Ranzato et al. 2015).

Data: the offline ambiguous-transduction task (target = reverse or sort of the source, both
references given; ``Config.data = "ambiguous"``) or line-aligned parallel text files
(``"SRC_FILE,TGT_FILE"``, e.g. a user's IWSLT files). :func:`train` runs one of the criteria
of :mod:`fastpapers.models.mixer` (XENT, DAD, E2E, REINFORCE or MIXER's schedule) through the
shared Trainer into a run folder (paper ``mixer``) that holds run.json, the trainer's
checkpoint, metrics and ``model.pt`` (config, weights, vocabularies: all that
:func:`evaluate` and :func:`translate` need). :func:`evaluate` gives corpus BLEU-4, mean
best-reference sentence BLEU-4 and exact match.
"""
import os
from dataclasses import asdict, dataclass
from typing import ClassVar, Dict, List, Optional

import torch

from ..data import AmbiguousTransduction, ParallelText, Vocabulary
from ..metrics import best_reference_bleu, corpus_bleu
from ..models.mixer import (ALGOS, MixerConfig, MixerModel, _strip, bleu_reward, dad_probability, mixer_schedule,
                            rouge_reward, sequence_loss)
from ..train import Trainer
from ..train.checkpoint import atomic_save, load_torch_file, seed_everything
from ..train.rundir import Run
from ._common import Loaded, RecipeConfig, find_run, open_run, stored_config

__all__ = ["PAPER", "Config", "load_data", "build", "fit", "train", "load", "evaluate", "translate",
           "collate_pairs", "save_model", "load_model", "MODEL_FILE"]

PAPER = "mixer"
MODEL_FILE = "model.pt"


@dataclass
class Config(RecipeConfig):
    """One MIXER run: data, model size, criterion and its schedule."""
    data: str = "ambiguous"             # "ambiguous" or "SRC_FILE,TGT_FILE"
    size: Optional[int] = None          # ambiguous pairs (default 20,000 to train, 1,000 held out)
    algo: str = "mixer"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    hidden: int = 128
    emb: int = 64
    encoder: str = "attentive"
    max_len: Optional[int] = None       # longest target (default: from the data)
    xent_steps: Optional[int] = None    # MIXER: XENT-only steps before annealing (default: steps // 2)
    delta: int = 2
    stage_steps: Optional[int] = None   # MIXER: steps per stage (default: spread evenly)
    reward: str = "bleu"
    rl_lr: Optional[float] = None
    init: Optional[str] = None          # start from this model.pt
    seed: int = 0
    checkpoint_every: Optional[int] = None  # 0: only at the end; None: a quarter of the steps

    PAPER: ClassVar[str] = PAPER
    # steps is not resumable: the XENT phase and the stages are derived from it.
    RESUMABLE: ClassVar[tuple] = ("checkpoint_every",)

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "emb", "delta"):
            self.check_int(name)
        for name in ("size", "max_len", "stage_steps"):
            if getattr(self, name) is not None:
                self.check_int(name)
        if self.xent_steps is not None:
            self.check_int("xent_steps", 0)
        if self.checkpoint_every is not None:
            self.check_int("checkpoint_every", 0)
        self.check_float("lr")
        self.check_float("rl_lr", optional=True)
        self.check_choice("algo", ALGOS)
        self.check_choice("reward", ("bleu", "rouge"))
        self.check_choice("encoder", ("attentive", "birnn"))
        if self.data != "ambiguous" and len(self.data.split(",")) != 2:
            self.fail("data", "'ambiguous' or SRC_FILE,TGT_FILE")


def load_data(cfg: Config, *, held_out: bool = False, vocab=None):
    """The training (or held-out) pairs ``cfg`` names; ``vocab`` = (source, target)
    vocabularies for parallel text read with a trained model's vocabularies."""
    if cfg.data == "ambiguous":
        n = cfg.size or (1000 if held_out else 20000)
        # Held-out pairs come from another seed stream than any training seed.
        return AmbiguousTransduction(n, seed=(10_000 + cfg.seed) if held_out else cfg.seed)
    src, tgt = cfg.data.split(",")
    src_vocab, tgt_vocab = vocab if vocab is not None else (None, None)
    return ParallelText(src, tgt, source_vocab=src_vocab, target_vocab=tgt_vocab)


def vocabularies(data):
    """(source, target) vocabularies of a dataset from :func:`load_data`."""
    if hasattr(data, "vocab"):
        return data.vocab, data.vocab
    return data.source_vocab, data.target_vocab


def build(cfg: Config, data=None) -> Dict[str, torch.nn.Module]:
    """A fresh model for ``cfg`` (or the ``cfg.init`` model), sized from ``data``."""
    if cfg.init:
        return {"model": load_model(cfg.init)[0]}
    data = load_data(cfg) if data is None else data
    src_vocab, tgt_vocab = vocabularies(data)
    sample = collate_pairs([data[i] for i in range(min(len(data), 4096))])
    max_len = cfg.max_len or max(int((sample["target"] != 0).sum(1).max()) - 1, 1)
    return {"model": MixerModel(MixerConfig(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab), emb=cfg.emb,
                                            hidden=cfg.hidden, encoder=cfg.encoder, max_tgt_len=max_len,
                                            max_src_len=max(64, int(sample["source"].shape[1]))))}


def train(cfg: Config, out: str, *, resume: bool = False, device="cpu", progress: bool = True,
          data=None) -> Run:
    """Train with ``cfg`` into the run folder ``out`` (then ``out/model.pt``); returns the run."""
    run = open_run(out, cfg, resume=resume)
    seed_everything(cfg.seed)
    data = load_data(cfg) if data is None else data
    src_vocab, tgt_vocab = vocabularies(data)
    model = build(cfg, data)["model"]
    xent_steps = cfg.steps // 2 if cfg.xent_steps is None else cfg.xent_steps
    T = model.cfg.max_tgt_len + 1
    stages = max(1, -(-T // cfg.delta))
    stage_steps = cfg.stage_steps or max(1, (cfg.steps - xent_steps) // stages)
    fit(model, data, algo=cfg.algo, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, out_dir=run.path,
        seed=cfg.seed, device=device, reward=cfg.reward, xent_steps=xent_steps, delta=cfg.delta,
        stage_steps=stage_steps, rl_lr=cfg.rl_lr, resume=resume, progress=progress,
        checkpoint_every=cfg.checkpoint_every)
    save_model(model.cpu(), run.file(MODEL_FILE), source_vocab=src_vocab, target_vocab=tgt_vocab)
    return run


def load(run, device="cpu") -> Loaded:
    """A trained model from a run folder (or a Run) or a ``model.pt`` file anywhere:
    ``nets["model"]``, ``artefacts["source_vocab"]`` / ``["target_vocab"]`` (None when the
    file holds none); ``config``/``run`` are None for a bare model file."""
    path = run.path if isinstance(run, Run) else os.fspath(run)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    found = cfg = None
    if os.path.isfile(os.path.join(folder, "run.json")):
        found = find_run(folder, PAPER)
        cfg = stored_config(found, Config)
    model, src_vocab, tgt_vocab = load_model(path)
    return Loaded(config=cfg, nets={"model": model.to(device)}, path=folder, run=found, device=torch.device(device),
                  artefacts={"source_vocab": src_vocab, "target_vocab": tgt_vocab})


def translate(model: MixerModel, src_vocab, tgt_vocab, lines: List[str], *, beam_size: int = 5,
              device="cpu", batch: int = 128) -> List[str]:
    """Translate text lines (blank lines stay blank)."""
    out = []
    for i in range(0, len(lines), batch):
        chunk = lines[i:i + batch]
        ids, _ = src_vocab.encode_batch(chunk, max_len=model.cfg.max_src_len)
        hyps = model.translate(ids.to(device), beam_size=beam_size)
        out += [(tgt_vocab.decode(torch.tensor(h)) if line.strip() else "") for line, h in zip(chunk, hyps)]
    return out


def collate_pairs(items, pad_id: int = 0):
    """Batch items of :class:`fastpapers.data.AmbiguousTransduction` (dicts with ``source``,
    ``target``, ``references``) or of :class:`fastpapers.data.ParallelText` ((source, target)
    id tensors) into {"source" (B, S), "target" (B, T), "references" (B, R, T)}; targets and
    references lose their leading <bos> (the decoder starts from it)."""
    from torch.nn.utils.rnn import pad_sequence
    if isinstance(items[0], dict):
        src = torch.stack([it["source"] for it in items])
        refs = torch.stack([it["references"] for it in items])[..., 1:]
        tgt = torch.stack([it["target"] for it in items])[:, 1:]
    else:
        src = pad_sequence([it[0] for it in items], batch_first=True, padding_value=pad_id)
        tgt = pad_sequence([it[1][1:] for it in items], batch_first=True, padding_value=pad_id)
        refs = tgt[:, None]
    return {"source": src, "target": tgt, "references": refs}


def fit(model: MixerModel, data, *, algo: str, steps: int, batch_size: int = 32, lr: float = 3e-3,
        out_dir: str = "runs/mixer", seed: int = 0, device="cpu", reward: str = "bleu", xent_steps: int = 0,
        delta: int = 2, stage_steps: int = 100, dad_max_p: float = 0.25, e2e_k: int = 10,
        xent_weight: float = 0.5, grad_clip: float = 10.0, rl_lr: Optional[float] = None, eval_fn=None,
        eval_every: int = 0, resume: bool = False, progress: bool = True, log_every: int = 50,
        checkpoint_every: Optional[int] = None) -> Dict[str, float]:
    """Train ``model`` on ``data`` (see :func:`collate_pairs`) for ``steps`` steps with the shared
    Trainer. ``algo="mixer"``: XENT for ``xent_steps`` steps, then s = T - delta, T - 2 delta, ...
    each held ``stage_steps`` steps (T = model.cfg.max_tgt_len). ``algo="dad"``: the sampling
    probability grows linearly to ``dad_max_p`` over the run. ``rl_lr``: MIXER's learning rate
    from the first REINFORCE stage on (the ambiguous-transduction runs in docs/results.md only
    improved over XENT with a smaller step there). Returns the last logged metrics."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if reward not in ("bleu", "rouge"):
        raise ValueError(f"reward must be 'bleu' or 'rouge', got {reward!r}")
    cfg = model.cfg
    reward_fn = (bleu_reward if reward == "bleu" else rouge_reward)(cfg.pad_id, cfg.eos_id)
    opt = {"model": torch.optim.Adam(model.parameters(), lr=lr)}

    def step_fn(tr, batch):
        t = tr.global_step
        kw = {}
        if algo == "mixer":
            kw["xent_steps"] = mixer_schedule(t, xent_epochs=xent_steps, T=cfg.max_tgt_len + 1, delta=delta,
                                              epochs_per_stage=stage_steps)
            if rl_lr is not None:
                for group in opt["model"].param_groups:
                    group["lr"] = lr if t < xent_steps else rl_lr
        loss, logs = sequence_loss(model, batch["source"], batch["target"], algo=algo, reward_fn=reward_fn,
                                   refs=batch["references"], dad_p=dad_probability(t, steps, dad_max_p),
                                   e2e_k=e2e_k, xent_weight=xent_weight, **kw)
        tr.step("model", loss)
        if algo == "mixer":
            logs["xent_tokens"] = float(kw["xent_steps"])
        return {"loss": loss.detach(), **logs}

    tr = Trainer({"model": model}, opt, step_fn, data=data, batch_size=batch_size, out_dir=out_dir, seed=seed,
                 device=device, grad_clip=grad_clip, collate_fn=lambda items: collate_pairs(items, cfg.pad_id),
                 log_every=log_every, eval_fn=eval_fn, eval_every=eval_every, progress=progress,
                 checkpoint_every=max(steps // 4, 1) if checkpoint_every is None else checkpoint_every)
    return tr.fit(steps, resume=resume)


@torch.no_grad()
def evaluate(model: MixerModel, data, *, beam_size: int = 1, batch_size: int = 256, device="cpu") -> Dict[str, float]:
    """Corpus BLEU-4 (all references of each source), mean best-reference sentence BLEU-4
    (unsmoothed, as the paper's test metric) and exact match (the output equals one reference)."""
    cfg = model.cfg
    was = model.training
    model.eval()
    hyps, refs_all, sent, exact = [], [], [], []
    for i in range(0, len(data), batch_size):
        batch = collate_pairs([data[j] for j in range(i, min(i + batch_size, len(data)))], cfg.pad_id)
        src = batch["source"].to(device)
        out = model.translate(src, beam_size=beam_size)
        refs = [[_strip(r, cfg) for r in row] for row in batch["references"].tolist()]
        hyp_t = torch.full((len(out), cfg.max_tgt_len + 1), cfg.pad_id, dtype=torch.long)
        for k, h in enumerate(out):
            hyp_t[k, :len(h)] = torch.tensor(h, dtype=torch.long)
        sent.append(best_reference_bleu(hyp_t, batch["references"], pad_id=cfg.pad_id, eos_id=cfg.eos_id,
                                        smooth="none"))
        exact += [any(h == r for r in rs) for h, rs in zip(out, refs)]
        hyps += out
        refs_all += refs
    model.train(was)
    corpus = corpus_bleu(hyps, refs_all)
    return {"bleu4": 100.0 * corpus["bleu_4"], "sentence_bleu4": 100.0 * float(torch.cat(sent).mean()),
            "exact_match": 100.0 * sum(exact) / max(len(exact), 1)}


def save_model(model: MixerModel, path: str, *, source_vocab=None, target_vocab=None) -> str:
    """Write the config, weights and vocabularies (token lists) for eval / translate."""
    return atomic_save({"format": "fastpapers-mixer", "config": asdict(model.cfg), "state_dict": model.state_dict(),
                "source_vocab": None if source_vocab is None else list(source_vocab.itos),
                "target_vocab": None if target_vocab is None else list(target_vocab.itos)}, path)


def load_model(path: str, map_location="cpu"):
    """-> (model, source Vocabulary or None, target Vocabulary or None)."""
    if os.path.isdir(path):
        path = os.path.join(path, MODEL_FILE)
    blob = load_torch_file(path, map_location, what="MIXER model file")
    if not isinstance(blob, dict) or blob.get("format") != "fastpapers-mixer":
        raise ValueError(f"{path} is not a fastpapers MIXER model file (written by `fastpapers mixer train`)")
    try:
        model = MixerModel(MixerConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
        src_v, tgt_v = blob["source_vocab"], blob["target_vocab"]
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} is not a usable MIXER model file: {str(exc).splitlines()[0]}") from None
    vocabs = [None if v is None else Vocabulary(v[4:]) for v in (src_v, tgt_v)]
    return model.eval(), vocabs[0], vocabs[1]

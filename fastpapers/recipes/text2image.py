"""Reed et al. 2016 (GAN-CLS, GAN-INT, the style encoder) on the shapes world: the recipe face of
:mod:`fastpapers.recipes`, plus the attribute judge that scores its samples.

Training runs three stages, each its own Trainer run with checkpoints and resume inside the
run folder: ``embed/`` (the joint text/image embedding), ``gan/`` (Algorithm 1,
:func:`~fastpapers.models.text2image.gan_cls_step`, the text encoder fixed) and ``style/``
(the style encoder, G fixed); it ends by writing ``model.pt`` (text encoder, G, S). The run
folder's ``run.json`` holds the :class:`Config`. Variants (``Config.variant``): ``gan``
(conditional GAN), ``gan-cls`` (matching-aware discriminator), ``gan-int`` (interpolated
embeddings), ``gan-int-cls`` (both, the default).

The judge (:mod:`fastpapers.metrics.judge`) is trained by :func:`train_judge` into a run
folder of its own (paper ``text2image_judge``) and used by :func:`evaluate`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Sequence

import torch

from ..metrics import judge as J
from ..models import text2image as t2i
from ..models.gan import dcgan_adam
from ._common import Loaded, RecipeConfig, RunLike, load_trained, open_run
from ._shapes_pairs import HELD_OUT, ShapesPairs, shapes_split, stack_items  # noqa: F401

PAPER = "text2image"
JUDGE = "text2image_judge"
VARIANTS = {"gan": (0.0, False), "gan-cls": (0.5, False), "gan-int": (0.0, True), "gan-int-cls": (0.5, True)}
STAGES = ("embed", "gan", "style")
DEFAULT_OUT = os.path.join("runs", "text2image")  # where `fastpapers text2image train` writes its run


@dataclass
class Config(RecipeConfig):
    """The paper's settings at the shapes world's scale, and the three stages' schedules."""

    variant: str = "gan-int-cls"
    image_size: int = 32
    nz: int = 100
    embed_dim: int = 64
    proj_dim: int = 128
    ngf: int = 32
    ndf: int = 32
    text_width: int = 128
    beta: float = 0.5
    interp_weight: float = 1.0
    real_label: float = 1.0
    instance_noise: float = 0.0
    noise_anneal_steps: int = 0
    zoom: int = 1
    upsample: str = "deconv"
    wrong_text: str = "random"   # GAN-CLS's wrong texts: "random" (the paper) or "near" (one attribute off)
    steps: int = 3000            # GAN steps
    embed_steps: int = 1000
    style_steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4             # Adam step size of G and S
    lr_d: Optional[float] = None  # of D (None: lr)
    embed_lr: float = 1e-3
    seed: int = 0
    train_size: int = 6000       # shapes-world training images when train() makes the data
    text_encoder: Optional[str] = None  # a model.pt whose fixed text encoder is reused (no embed stage)
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50

    PAPER: ClassVar[str] = PAPER
    RESUMABLE: ClassVar[tuple] = ("steps", "embed_steps", "style_steps", "batch_size", "lr", "lr_d", "embed_lr",
                                  "seed", "train_size", "text_encoder", "sample_every", "checkpoint_every",
                                  "log_every")
    FLAGS: ClassVar[dict] = {"ngf": "--width", "ndf": "--width", "image_size": "--size"}

    def __post_init__(self):
        self.check_choice("variant", sorted(VARIANTS))
        self.check_choice("image_size", (32, 64))
        for name in ("nz", "embed_dim", "proj_dim", "ngf", "ndf", "text_width", "steps", "embed_steps",
                     "style_steps", "batch_size", "train_size"):
            self.check_int(name, 1)
        for name in ("noise_anneal_steps", "sample_every", "checkpoint_every", "log_every"):
            self.check_int(name, 0)
        if not (isinstance(self.real_label, (int, float)) and 0.5 < self.real_label <= 1.0):
            self.fail("real_label", "in (0.5, 1]")
        self.check_float("instance_noise", open_low=False)
        self.check_float("beta", 0.0, 1.0, open_low=False)
        self.check_float("interp_weight", open_low=False)
        for name in ("lr", "embed_lr"):
            self.check_float(name)
        self.check_float("lr_d", optional=True)
        self.check_choice("upsample", t2i.UPSAMPLE)
        self.check_choice("wrong_text", t2i.WRONG_TEXT)
        self.check_choice("zoom", (1, 2))


def build(cfg: Config) -> dict:
    """The networks of a run: text encoder, image encoder (embedding only), G, D, S."""
    return {
        "text": t2i.CharCNNRNN(cfg.embed_dim, cfg.text_width, cfg.text_width),
        "image": t2i.ImageEncoder(cfg.embed_dim, width=cfg.ndf),
        "G": t2i.Generator(cfg.embed_dim, cfg.nz, cfg.proj_dim, cfg.ngf, cfg.image_size, cfg.upsample),
        "D": t2i.Discriminator(cfg.embed_dim, cfg.proj_dim, cfg.ndf, cfg.image_size),
        "S": t2i.StyleEncoder(cfg.nz, cfg.ndf, cfg.image_size),
    }


def _captions(batch, device):
    ids, lengths = t2i.encode_chars(list(batch["caption"]))
    return ids.to(device), lengths.to(device)


def _checkpoint_step(path: str) -> int:
    from ..train.checkpoint import read_checkpoint
    return int(read_checkpoint(path)["step"]) if os.path.isfile(path) else 0


def _preview_captions(data, k: int = 8) -> list:
    caps, seen = [], set()
    for i in range(min(len(data), 2000)):
        c = data[i]["caption"]
        if c not in seen:
            seen.add(c)
            caps.append(c)
        if len(caps) == k:
            break
    return [c for c in caps for _ in range(k)]


def train(cfg: Config, out: str, *, resume: bool = False, data=None, device="cpu", progress: bool = True):
    """Train the three stages into ``out/{embed,gan,style}`` and write ``out/model.pt``.

    ``data`` defaults to ``cfg.train_size`` shapes-world training pairs. A stage that trains in
    this call makes the later stages' checkpoints stale (fitted to an older φ or G): those
    restart instead of resuming. Returns the Run.
    """
    from ..train import Trainer, seed_everything
    cls_weight, use_interp = VARIANTS[cfg.variant]
    reused = load(cfg.text_encoder) if cfg.text_encoder is not None else None
    if reused is not None and (reused.config.embed_dim, reused.config.text_width) != (cfg.embed_dim, cfg.text_width):
        raise ValueError(f"text_encoder {cfg.text_encoder} has a different embed_dim/text_width than this run")
    run = open_run(out, cfg, resume=resume)
    seed_everything(cfg.seed)
    nets = build(cfg)
    txt, img, g, d, s = (nets[k] for k in ("text", "image", "G", "D", "S"))
    if data is None:
        data = shapes_split("train", image_size=cfg.image_size, n=cfg.train_size, seed=cfg.seed, zoom=cfg.zoom)
    common = dict(data=data, batch_size=cfg.batch_size, seed=cfg.seed, device=device, log_every=cfg.log_every,
                  checkpoint_every=cfg.checkpoint_every, progress=progress)
    fresh = {"resume": resume}

    def fit(trainer, steps):
        done = _checkpoint_step(trainer.checkpoint_path) if fresh["resume"] else 0
        trainer.fit(steps, resume=fresh["resume"])
        if done < steps:
            fresh["resume"] = False

    # Stage 1: the symmetric joint embedding of captions and images.
    if reused is not None:
        txt.load_state_dict(reused.nets["text"].state_dict())
    else:
        def embed_step(tr, batch):
            ids, lengths = _captions(batch, tr.device)
            loss = t2i.joint_embedding_loss(img(batch["image"]), txt(ids, lengths), batch["label"])
            tr.step("embed", loss)
            return {"loss_embed": loss}

        fit(Trainer({"text": txt, "image": img},
                    {"embed": dcgan_adam(list(txt.parameters()) + list(img.parameters()), cfg.embed_lr)},
                    embed_step, out_dir=run.file("embed"), **common), cfg.embed_steps)
    txt.eval().requires_grad_(False)
    txt.to(device)

    # Stage 2: the GAN (Algorithm 1), φ fixed.
    fixed_caps = _preview_captions(data)
    fixed_ids, fixed_len = (x.to(device) for x in t2i.encode_chars(fixed_caps))
    fixed_z = torch.randn(len(fixed_caps), cfg.nz, generator=torch.Generator().manual_seed(cfg.seed)).to(device)

    def gan_step(tr, batch):
        sigma = t2i.instance_noise_sigma(tr.global_step, cfg.instance_noise, cfg.noise_anneal_steps)
        with torch.no_grad():
            phi = txt(*_captions(batch, tr.device))
        attrs = torch.stack([batch[k].cpu() for k in ("colour", "kind", "size")], 1) \
            if cfg.wrong_text == "near" else None
        losses = t2i.gan_cls_step(g, d, batch["image"], phi, tr.step, labels=batch["label"], attributes=attrs,
                                  cls_weight=cls_weight, interp=use_interp, wrong_text=cfg.wrong_text,
                                  beta=cfg.beta, interp_weight=cfg.interp_weight, real_label=cfg.real_label,
                                  noise_sigma=sigma)
        return {**losses, "noise_sigma": sigma}

    gan_opts = {"D": dcgan_adam(d.parameters(), cfg.lr if cfg.lr_d is None else cfg.lr_d),
                "G": dcgan_adam(g.parameters(), cfg.lr)}
    fit(Trainer({"G": g, "D": d}, gan_opts, gan_step, out_dir=run.file("gan"),
                sample_fn=lambda tr: g(fixed_z, txt(fixed_ids, fixed_len)), sample_every=cfg.sample_every,
                sample_range=(-1.0, 1.0), **common), cfg.steps)
    g.eval().requires_grad_(False)

    # Stage 3: the style encoder S, G fixed: ‖z − S(G(z, φ))‖².
    def style_step(tr, batch):
        with torch.no_grad():
            phi = txt(*_captions(batch, tr.device))
        loss = t2i.style_encoder_loss(s, g, torch.randn(phi.shape[0], cfg.nz, device=tr.device), phi)
        tr.step("S", loss)
        return {"loss_style": loss}

    fit(Trainer({"S": s}, {"S": dcgan_adam(s.parameters(), cfg.lr)}, style_step, out_dir=run.file("style"),
                **common), cfg.style_steps)
    run.save_tensors("model.pt", {"format": "fastpapers-text2image", "config": cfg.to_dict(),
                                  **{k: nets[k].state_dict() for k in ("text", "G", "S")}})
    return run


def _model_weights(r, nets) -> tuple:
    if not r.exists("model.pt"):
        raise FileNotFoundError(f"model file not found: {r.file('model.pt')} (written at the end of "
                                f"`fastpapers text2image train`)")
    bundle = r.load_tensors("model.pt")
    if not isinstance(bundle, dict) or bundle.get("format") != "fastpapers-text2image":
        raise ValueError(f"model file {r.file('model.pt')} is not a text2image model.pt")
    for k in ("text", "G", "S"):
        try:
            nets[k].load_state_dict(bundle[k])
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"model file {r.file('model.pt')}: {k!r} does not fit the run's config") from exc
    return ("text", "G", "S")


def load(run: RunLike, device="cpu") -> Loaded:
    """The text encoder, G and S (eval mode) of a run folder, its model.pt, or a Run."""
    return load_trained(run, PAPER, Config, build, device, weights=_model_weights)


# ---- sampling and style transfer -------------------------------------------------------------

def check_words(texts: Sequence[str]) -> None:
    """Refuse captions with words the shapes world's captions never use (naming them)."""
    from ..data import shapes_vocabulary, tokenize
    if isinstance(texts, str) or not texts:
        raise ValueError("--text must be given at least once")
    known = shapes_vocabulary()
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"--text must be strings, got {type(t).__name__}")
        unknown = [w for w in tokenize(t) if w.isalpha() and w not in known]
        if unknown:
            raise ValueError(f"--text {t!r}: words never seen in training: {unknown} "
                             f"(the captions use: {' '.join(w for w in known.words if w.isalpha())})")


@torch.no_grad()
def generate(nets: dict, captions: Sequence[str], z: torch.Tensor) -> torch.Tensor:
    """G(z_i, φ(caption_i)) for each row; images in [-1, 1]."""
    phi = nets["text"].embed(list(captions))
    return nets["G"](z.to(phi.device), phi)


def sample(run: RunLike, texts: Sequence[str], out: str, *, n: int = 8, seed: int = 0, device="cpu") -> list:
    """One row of n samples per caption, written to ``out`` (a PNG path); returns [out]."""
    from ..viz import save_grid
    check_words(texts)
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    m = load(run, device)
    z = torch.randn(n, m.config.nz, generator=torch.Generator().manual_seed(seed)).repeat(len(texts), 1)
    x = generate(m.nets, [t for t in texts for _ in range(n)], z.to(device))
    return [save_grid(x.cpu(), out, nrow=n, value_range=(-1.0, 1.0), scale=2)]


@torch.no_grad()
def transfer(run: RunLike, texts: Sequence[str], out: str, *, queries: Optional[torch.Tensor] = None,
             n: int = 6, seed: int = 0, device="cpu") -> list:
    """Style transfer figure: row i = query image i, then G(S(query i), φ(text)) per text; returns [out]."""
    from ..viz import save_grid
    check_words(texts)
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    m = load(run, device)
    if queries is None:
        data = shapes_split("test", image_size=m.config.image_size, n=n, seed=seed, zoom=m.config.zoom)
        queries = torch.stack([data[i]["image"] for i in range(n)])
    queries = queries.to(device)
    phi = m.nets["text"].embed(list(texts))
    cols = [queries]
    for j in range(len(texts)):
        cols.append(t2i.style_transfer(m.nets["G"], m.nets["S"], queries, phi[j:j + 1].expand(len(queries), -1)))
    grid = torch.stack(cols, 1).reshape(-1, *queries.shape[1:])
    return [save_grid(grid.cpu(), out, nrow=len(cols), value_range=(-1.0, 1.0), scale=2)]


# ---- the judge and evaluation ----------------------------------------------------------------

@dataclass
class JudgeConfig(RecipeConfig):
    """The attribute judge's settings; ``heads`` (attribute -> classes) is read from the data."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    image_size: int = 32
    augment: bool = False
    zoom: int = 1
    heads: dict = field(default_factory=dict)

    PAPER: ClassVar[str] = JUDGE
    RESUMABLE: ClassVar[tuple] = ("steps", "batch_size", "lr", "seed")
    FLAGS: ClassVar[dict] = {"image_size": "--size"}

    def __post_init__(self):
        self.check_int("steps", 1)
        self.check_int("batch_size", 1)
        self.check_float("lr")
        self.check_choice("image_size", (32, 64))
        self.check_choice("zoom", (1, 2))


def train_judge(cfg: JudgeConfig, out: str, *, resume: bool = False, data=None, device="cpu",
                progress: bool = True):
    """The separately trained attribute classifier, on real images of every colour–shape pair.

    ``augment``: train on :func:`~fastpapers.metrics.judge.degrade`-d images too, so that the
    judge can read blurred or noisy drawings (GAN samples early in training are both). Measured
    at 900 steps (docs/results.md): at zoom 1 such a judge reads colour (100%) and size (92%) of
    real test images but only 34–42% of their shapes; at zoom 2 it reads 91% / 85% of their
    shapes (seen / held-out pairs). ``zoom`` is recorded so that :func:`evaluate` can refuse a
    model of the other zoom. Returns the Run."""
    from ..train import Trainer, seed_everything
    if data is None:
        data = shapes_split("all", image_size=cfg.image_size, seed=cfg.seed + 1, zoom=cfg.zoom)
    cfg = cfg.replace(heads={a: data.num_classes[a] for a in J.ATTRIBUTES})
    run = open_run(out, cfg, resume=resume)
    seed_everything(cfg.seed)
    judge = J.AttributeClassifier(cfg.heads)

    def step(tr, batch):
        logits = judge(J.degrade(batch["image"]) if cfg.augment else batch["image"])
        losses = {a: torch.nn.functional.cross_entropy(logits[a], batch[a]) for a in J.ATTRIBUTES}
        tr.step("judge", sum(losses.values()))
        return {f"loss_{a}": v for a, v in losses.items()}

    Trainer({"judge": judge}, {"judge": torch.optim.Adam(judge.parameters(), cfg.lr)}, step, data=data,
            batch_size=cfg.batch_size, out_dir=run.path, seed=cfg.seed, device=device, progress=progress,
            checkpoint_every=500).fit(cfg.steps, resume=resume)
    return run


def load_judge(run: RunLike, device="cpu") -> Loaded:
    """The trained judge (``nets["judge"]``, eval mode) of its run folder or checkpoint.pt."""
    return load_trained(run, JUDGE, JudgeConfig, lambda cfg: {"judge": J.AttributeClassifier(cfg.heads)}, device)


@torch.no_grad()
def evaluate(run: RunLike, judge: RunLike, *, n: int = 600, seed: int = 0, device="cpu", data=None) -> dict:
    """Attribute accuracy of generated images on held-out captions (seen and unseen colour–shape
    pairs), judge accuracy on the real test images, style AUC and background transfer accuracy."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    m, jm = load(run, device), load_judge(judge, device)
    cfg, nets, jnet = m.config, m.nets, jm.nets["judge"]
    if (jm.config.zoom, jm.config.image_size) != (cfg.zoom, cfg.image_size):
        raise ValueError(f"judge {jm.path} was trained on images of size {jm.config.image_size} and zoom "
                         f"{jm.config.zoom}, the model {m.path} on size {cfg.image_size} and zoom {cfg.zoom}")
    if data is None:
        data = shapes_split("test", image_size=cfg.image_size, seed=seed + 2, zoom=cfg.zoom)
    test = stack_items(data, ("image", "caption", "colour", "kind", "size", "background", "unseen"), limit=n)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(test["caption"]), cfg.nz, generator=gen).to(device)
    chunks = range(0, len(z), 256)
    fake = torch.cat([generate(nets, test["caption"][i:i + 256], z[i:i + 256]) for i in chunks])
    unseen = test["unseen"].bool()
    res = {"n": len(z), "n_unseen": int(unseen.sum())}
    for name, images in (("generated", fake), ("real", test["image"].to(device))):
        pred = J.predict(jnet, images)
        for group, mask in (("seen", ~unseen), ("unseen", unseen)):
            if mask.sum() > 0:
                res.update({f"{name}/{group}/{k}": v for k, v in J.attribute_accuracy(pred, test, mask).items()})
    # Style: does S(x) of real images group them by background (the paper's ROC analysis)?
    style = torch.cat([nets["S"](test["image"][i:i + 256].to(device)).cpu() for i in chunks])
    res["style/auc_background"] = J.pairwise_auc(style, test["background"])
    # Transfer: G(S(x), φ(another caption)) keeps x's background, judged by the classifier.
    other = [test["caption"][j] for j in torch.randperm(len(z), generator=gen).tolist()]
    phi = torch.cat([nets["text"].embed(other[i:i + 256]) for i in chunks])
    moved = torch.cat([nets["G"](nets["S"](test["image"][i:i + 256].to(device)), phi[i:i + 256]) for i in chunks])
    kept = J.predict(jnet, moved)["background"] == test["background"]
    res["style/transfer_background_acc"] = kept.float().mean().item()
    res["style/transfer_background_chance"] = 1.0 / jnet.heads["background"].out_features
    return res

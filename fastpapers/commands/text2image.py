"""``fastpapers text2image train|sample|transfer|judge|eval``: Reed et al. 2016 on the shapes world.

Python entry points: :func:`train` (three stages, each its own Trainer run with checkpoints
and resume: the joint text/image embedding, then the GAN with the text encoder fixed, then
the style encoder with G fixed; it ends by writing ``<out>/model.pt``), :func:`sample`,
:func:`transfer`, :func:`train_judge` and :func:`evaluate`. The CLI only parses flags.

Variants (``--variant``): ``gan`` (conditional GAN), ``gan-cls`` (matching-aware
discriminator), ``gan-int`` (interpolated embeddings), ``gan-int-cls`` (both, the default).
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import torch

from ..models import text2image as t2i
from ._common import add_common, resolve_device, seed_everything

VARIANTS = {"gan": (0.0, False), "gan-cls": (0.5, False), "gan-int": (0.0, True), "gan-int-cls": (0.5, True)}
STAGES = ("embed", "gan", "style")
# GAN-CLS's wrong texts: "random" (the paper: any caption of another class) or "near" (a
# caption that differs in exactly one of colour, shape and size: t2i.near_mismatched_indices).
WRONG_TEXT = ("random", "near")


# Where `fastpapers text2image train` writes its run unless --out says otherwise.
DEFAULT_OUT = os.path.join("runs", "text2image")

def default_config(**overrides) -> dict:
    cfg = dict(variant="gan-int-cls", image_size=32, nz=100, embed_dim=64, proj_dim=128, ngf=32, ndf=32,
               text_width=128, beta=0.5, interp_weight=1.0, real_label=1.0,
               instance_noise=0.0, noise_anneal_steps=0, zoom=1, upsample="deconv",
               wrong_text="random")
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown text2image config keys {unknown}; known: {sorted(cfg)}")
    cfg.update(overrides)
    if cfg["variant"] not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {cfg['variant']!r}")
    if not 0.5 < cfg["real_label"] <= 1.0:
        raise ValueError(f"real_label (--real-label) must be in (0.5, 1], got {cfg['real_label']}")
    if not cfg["instance_noise"] >= 0:
        raise ValueError(f"instance_noise (--instance-noise) must be >= 0, got {cfg['instance_noise']}")
    if not isinstance(cfg["noise_anneal_steps"], int) or cfg["noise_anneal_steps"] < 0:
        raise ValueError(f"noise_anneal_steps (--noise-anneal-steps) must be an int >= 0, "
                         f"got {cfg['noise_anneal_steps']!r}")
    if cfg["upsample"] not in t2i.UPSAMPLE:
        raise ValueError(f"upsample (--upsample) must be one of {t2i.UPSAMPLE}, got {cfg['upsample']!r}")
    if cfg["wrong_text"] not in WRONG_TEXT:
        raise ValueError(f"wrong_text (--wrong-text) must be one of {WRONG_TEXT}, got {cfg['wrong_text']!r}")
    if cfg["zoom"] not in (1, 2):
        raise ValueError(f"zoom (--zoom) must be 1 or 2, got {cfg['zoom']!r}")
    return cfg


def build(cfg: dict) -> dict:
    """The four networks of a run: text encoder, image encoder (embedding only), G, D, S."""
    return {
        "text": t2i.CharCNNRNN(cfg["embed_dim"], cfg["text_width"], cfg["text_width"]),
        "image": t2i.ImageEncoder(cfg["embed_dim"], width=cfg["ndf"]),
        "G": t2i.Generator(cfg["embed_dim"], cfg["nz"], cfg["proj_dim"], cfg["ngf"], cfg["image_size"],
                           cfg["upsample"]),
        "D": t2i.Discriminator(cfg["embed_dim"], cfg["proj_dim"], cfg["ndf"], cfg["image_size"]),
        "S": t2i.StyleEncoder(cfg["nz"], cfg["ndf"], cfg["image_size"]),
    }


# ---- data ------------------------------------------------------------------------------------

# Colour-shape pairs never seen in training: one per shape, so each colour and each shape
# still appears in training with other partners.
HELD_OUT = (("red", "triangle"), ("blue", "circle"), ("green", "star"), ("yellow", "cross"), ("purple", "square"))


class ShapesPairs(torch.utils.data.Dataset):
    """Text-to-image items over the shapes world's :class:`ShapesTextToImage` datasets.

    Item: image (3, S, S) in [-1, 1], caption (a string), label (class id of the caption's
    colour, shape and size: pairs of one class are never each other's "wrong text"), colour,
    kind, size, background (the style, never in the caption) and unseen (1 when the
    colour-shape pair was held out of training). ``random_caption`` draws one of an image's
    template captions per fetch (from the global RNG, which the Trainer seeds and restores);
    otherwise image i shows its caption i mod C.
    """

    def __init__(self, parts, *, random_caption: bool):
        from ..data.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZES
        self.parts = list(parts)
        self.random_caption = random_caption
        self.num_classes = {"colour": len(COLOURS), "kind": len(SHAPES), "size": len(SIZES),
                            "background": len(BACKGROUNDS)}
        self._n = sum(len(p) for p, _ in self.parts)

    def __len__(self):
        return self._n

    def _locate(self, i):
        # Parts are interleaved so that any prefix mixes seen and unseen pairs.
        k = len(self.parts)
        part, unseen = self.parts[i % k]
        j = i // k
        if j >= len(part):
            raise IndexError(f"index {i} out of range for {self._n} items")
        return part, unseen, j

    def __getitem__(self, i):
        if not 0 <= i < self._n:
            raise IndexError(f"index {i} out of range for {self._n} items")
        part, unseen, j = self._locate(i)
        item = part[j]
        caps = part.captions[j]
        c = int(torch.randint(len(caps), ())) if self.random_caption else i % len(caps)
        colour, kind, size = int(item["colour"]), int(item["shape"]), int(item["size"])
        nk, ns = self.num_classes["kind"], self.num_classes["size"]
        return {"image": item["image"] * 2 - 1, "caption": caps[c], "label": (colour * nk + kind) * ns + size,
                "colour": colour, "kind": kind, "size": size, "background": int(item["style"]), "unseen": unseen}


def shapes_split(split: str, *, image_size: int = 32, n: Optional[int] = None, seed: int = 0,
                 zoom: int = 1) -> ShapesPairs:
    """``train``: pairs without the :data:`HELD_OUT` combinations (n defaults to 6000, random
    caption per fetch); ``test``: new images, half of seen pairs and half of held-out pairs
    (n defaults to 1000); ``all``: every combination, for the judge (n defaults to 6000).
    ``zoom`` = 2: object-centred crops of scenes drawn at twice the size (the paper crops CUB
    birds to their boxes in the same spirit); see :class:`ShapesTextToImage`."""
    from ..data.shapes import ShapesTextToImage
    kw = dict(size=image_size, seed=seed, zoom=zoom)
    if split == "train":
        return ShapesPairs([(ShapesTextToImage(n or 6000, split="train", held_out=HELD_OUT, **kw), 0)],
                           random_caption=True)
    if split == "test":
        n = n or 1000
        seen = ShapesTextToImage((n + 1) // 2, split="test", held_out=HELD_OUT, **kw)
        unseen = ShapesTextToImage(n // 2, split="heldout", held_out=HELD_OUT, **kw)
        parts = [(seen, 0), (unseen, 1)] if n > 1 else [(seen, 0)]
        return ShapesPairs(parts, random_caption=False)
    if split == "all":
        return ShapesPairs([(ShapesTextToImage(n or 6000, split="train", **kw), 0)], random_caption=True)
    raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")


def _captions(batch, device):
    ids, lengths = t2i.encode_chars(list(batch["caption"]))
    return ids.to(device), lengths.to(device)


# ---- training --------------------------------------------------------------------------------

def _adam(params, lr):
    return torch.optim.Adam(params, lr, betas=(0.5, 0.999))


def train(out: str, *, steps: int = 3000, embed_steps: int = 1000, style_steps: int = 1000, batch_size: int = 64,
          lr: float = 2e-4, lr_d: Optional[float] = None, embed_lr: float = 1e-3, seed: int = 0, device="cpu",
          resume: bool = False, data=None,
          text_encoder: Optional[str] = None, sample_every: int = 500, checkpoint_every: int = 500,
          log_every: int = 50, progress: bool = True, **config) -> dict:
    """Train the three stages into ``out/{embed,gan,style}`` and write ``out/model.pt``.

    ``text_encoder``: a ``model.pt`` of another run whose fixed text encoder is reused (the
    embedding stage is skipped), so that variants compare on one φ. ``lr`` is the Adam step
    size of G and S, ``lr_d`` that of D (default: ``lr``). Returns the config.
    """
    from ..train import Trainer, atomic_save, seed_everything as train_seed
    cfg = default_config(**config)
    cls_weight, use_interp = VARIANTS[cfg["variant"]]
    os.makedirs(out, exist_ok=True)
    cfg_path = os.path.join(out, "config.json")
    if resume and os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            saved = json.load(f)
        # Keys added after a run was made take their defaults (the run was trained with them).
        saved = default_config(**saved)
        differ = sorted(k for k in cfg if saved[k] != cfg[k])
        if differ:
            raise ValueError(f"--resume: the run in {out} was trained with other settings of {differ}: "
                             f"{ {k: saved[k] for k in differ} }, not { {k: cfg[k] for k in differ} }")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)
    train_seed(seed)
    nets = build(cfg)
    txt, img, g, d, s = (nets[k] for k in ("text", "image", "G", "D", "S"))
    if data is None:
        data = shapes_split("train", image_size=cfg["image_size"], seed=seed, zoom=cfg["zoom"])
    common = dict(data=data, batch_size=batch_size, seed=seed, device=device, log_every=log_every,
                  checkpoint_every=checkpoint_every, progress=progress)
    # A stage that trains in this call makes the later stages' checkpoints stale (they were
    # fitted to an older φ or G): those restart instead of resuming.
    fresh = {"resume": resume}

    def fit(trainer, steps_):
        done = _checkpoint_step(trainer.checkpoint_path) if fresh["resume"] else 0
        trainer.fit(steps_, resume=fresh["resume"])
        if done < steps_:
            fresh["resume"] = False

    # Stage 1: the symmetric joint embedding of captions and images.
    if text_encoder is not None:
        bundle = _read_bundle(text_encoder)
        if bundle["config"]["embed_dim"] != cfg["embed_dim"] or bundle["config"]["text_width"] != cfg["text_width"]:
            raise ValueError(f"text_encoder {text_encoder} has a different embed_dim/text_width than this run")
        txt.load_state_dict(bundle["text"])
    else:
        def embed_step(tr, batch):
            ids, lengths = _captions(batch, tr.device)
            loss = t2i.joint_embedding_loss(img(batch["image"]), txt(ids, lengths), batch["label"])
            tr.step("embed", loss)
            return {"loss_embed": loss}

        fit(Trainer({"text": txt, "image": img}, {"embed": _adam(list(txt.parameters()) + list(img.parameters()),
                                                             embed_lr)},
                embed_step, out_dir=os.path.join(out, "embed"), **common), embed_steps)
    txt.eval().requires_grad_(False)
    txt.to(device)

    # Stage 2: the GAN, φ fixed.
    fixed_caps = _preview_captions(data)
    fixed_ids, fixed_len = (x.to(device) for x in t2i.encode_chars(fixed_caps))
    fixed_z = torch.randn(len(fixed_caps), cfg["nz"], generator=torch.Generator().manual_seed(seed)).to(device)

    def gan_step(tr, batch):
        x = batch["image"]
        b = x.shape[0]
        sigma = t2i.instance_noise_sigma(tr.global_step, cfg["instance_noise"], cfg["noise_anneal_steps"])

        def noisy(images):  # what D sees: the image plus instance noise (none by default)
            return images + sigma * torch.randn_like(images) if sigma > 0 else images

        with torch.no_grad():
            phi = txt(*_captions(batch, tr.device))
        z = torch.randn(b, cfg["nz"], device=tr.device)
        fake = g(z, phi)
        real_wrong = None
        if cls_weight > 0:
            if cfg["wrong_text"] == "near":
                attrs = torch.stack([batch[k].cpu() for k in ("colour", "kind", "size")], 1)
                wrong = phi[t2i.near_mismatched_indices(attrs).to(tr.device)]
            else:
                wrong = phi[t2i.mismatched_indices(batch["label"].cpu()).to(tr.device)]
            real_wrong = d(noisy(x), wrong)
        loss_d = t2i.discriminator_loss(d(noisy(x), phi), d(noisy(fake.detach()), phi), real_wrong, cls_weight,
                                        cfg["real_label"])
        tr.step("D", loss_d)
        interp_logits = None
        if use_interp:
            # The paper's generator batch is 1.5x: half a batch more of interpolated captions.
            h = max(1, b // 2)
            partner = phi[torch.randperm(b, device=tr.device)[:h]]
            phi_int = t2i.interpolate_embeddings(phi[:h], partner, cfg["beta"])
            interp_logits = d(noisy(g(torch.randn(h, cfg["nz"], device=tr.device), phi_int)), phi_int)
        loss_g = t2i.generator_loss(d(noisy(fake), phi), interp_logits, cfg["interp_weight"])
        tr.step("G", loss_g)
        return {"loss_d": loss_d, "loss_g": loss_g, "noise_sigma": sigma}

    gan_opts = {"D": _adam(d.parameters(), lr if lr_d is None else lr_d), "G": _adam(g.parameters(), lr)}
    fit(Trainer({"G": g, "D": d}, gan_opts, gan_step,
                out_dir=os.path.join(out, "gan"), sample_fn=lambda tr: g(fixed_z, txt(fixed_ids, fixed_len)),
                sample_every=sample_every, sample_range=(-1.0, 1.0), **common), steps)
    g.eval().requires_grad_(False)

    # Stage 3: the style encoder S, G fixed: ‖z − S(G(z, φ))‖².
    def style_step(tr, batch):
        with torch.no_grad():
            phi = txt(*_captions(batch, tr.device))
        loss = t2i.style_encoder_loss(s, g, torch.randn(phi.shape[0], cfg["nz"], device=tr.device), phi)
        tr.step("S", loss)
        return {"loss_style": loss}

    fit(Trainer({"S": s}, {"S": _adam(s.parameters(), lr)}, style_step, out_dir=os.path.join(out, "style"),
                **common), style_steps)

    atomic_save({"format": "fastpapers-text2image", "config": cfg,
                 **{k: nets[k].state_dict() for k in ("text", "G", "S")}}, os.path.join(out, "model.pt"))
    return cfg


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


def _read_bundle(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path} (written at the end of `fastpapers text2image train`)")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model file {path} is corrupt or not a torch file: {exc}") from exc
    if not isinstance(bundle, dict) or bundle.get("format") != "fastpapers-text2image":
        raise ValueError(f"model file {path} is not a text2image model.pt")
    return bundle


def load_model(path: str, device="cpu") -> tuple[dict, dict]:
    """(config, {"text", "G", "S"} in eval mode) from a run's ``model.pt``."""
    bundle = _read_bundle(path)
    cfg = default_config(**bundle["config"])
    nets = build(cfg)
    for k in ("text", "G", "S"):
        nets[k].load_state_dict(bundle[k])
        nets[k].to(device).eval()
    return cfg, {k: nets[k] for k in ("text", "G", "S")}


# ---- sampling and style transfer -------------------------------------------------------------

@torch.no_grad()
def generate(nets: dict, captions: Sequence[str], z: torch.Tensor) -> torch.Tensor:
    """G(z_i, φ(caption_i)) for each row; images in [-1, 1]."""
    phi = nets["text"].embed(list(captions))
    return nets["G"](z.to(phi.device), phi)


def sample(checkpoint: str, texts: Sequence[str], out: str, *, n: int = 8, seed: int = 0, device="cpu") -> str:
    """One row of n samples per caption, written to ``out`` (a PNG path)."""
    from ..viz import save_grid
    if not texts:
        raise ValueError("--text must be given at least once")
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    cfg, nets = load_model(checkpoint, device)
    z = torch.randn(n, cfg["nz"], generator=torch.Generator().manual_seed(seed)).repeat(len(texts), 1)
    x = generate(nets, [t for t in texts for _ in range(n)], z.to(device))
    return save_grid(x.cpu(), out, nrow=n, value_range=(-1.0, 1.0), scale=2)


@torch.no_grad()
def transfer(checkpoint: str, texts: Sequence[str], out: str, *, queries: Optional[torch.Tensor] = None,
             n: int = 6, seed: int = 0, device="cpu") -> str:
    """Style transfer figure: row i = query image i, then G(S(query i), φ(text)) per text."""
    from ..viz import save_grid
    if not texts:
        raise ValueError("--text must be given at least once")
    cfg, nets = load_model(checkpoint, device)
    if queries is None:
        data = shapes_split("test", image_size=cfg["image_size"], n=n, seed=seed, zoom=cfg["zoom"])
        queries = torch.stack([data[i]["image"] for i in range(n)])
    queries = queries.to(device)
    phi = nets["text"].embed(list(texts))
    cols = [queries]
    for j in range(len(texts)):
        cols.append(t2i.style_transfer(nets["G"], nets["S"], queries, phi[j:j + 1].expand(len(queries), -1)))
    grid = torch.stack(cols, 1).reshape(-1, *queries.shape[1:])
    return save_grid(grid.cpu(), out, nrow=len(cols), value_range=(-1.0, 1.0), scale=2)


# ---- evaluation ------------------------------------------------------------------------------

ATTRIBUTES = ("colour", "kind", "size", "background")


def degrade(images: torch.Tensor, max_blur: float = 1.5, max_noise: float = 0.3) -> torch.Tensor:
    """The robust judge's training augmentation: each image is, with probability ½, blurred by a
    Gaussian of σ ~ U(0.3, max_blur) pixels (one σ per batch) and, independently with
    probability ½, given N(0, s²) pixel noise, s ~ U(0, max_noise) per image. Images in [-1, 1]."""
    from torchvision.transforms.functional import gaussian_blur
    b = images.shape[0]
    sigma = 0.3 + (max_blur - 0.3) * torch.rand(()).item()
    blurred = gaussian_blur(images, [5, 5], [sigma, sigma])
    pick = (torch.rand(b, device=images.device) < 0.5)[:, None, None, None]
    out = torch.where(pick, blurred, images)
    amount = torch.rand(b, 1, 1, 1, device=images.device) * max_noise * (torch.rand(b, 1, 1, 1, device=images.device) < 0.5)
    return out + amount * torch.randn_like(out)


def train_judge(out: str, *, steps: int = 1500, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                device="cpu", resume: bool = False, data=None, image_size: int = 32, progress: bool = True,
                augment: bool = False, zoom: int = 1):
    """The separately trained attribute classifier, on real images of every colour–shape pair.

    ``augment``: train on :func:`degrade`-d images too, so that the judge can read blurred or
    noisy drawings (GAN samples early in training are both). Measured at 900 steps
    (docs/results.md): at zoom 1 such a judge reads colour (100%) and size (92%) of real test
    images but only 34–42% of their shapes; at zoom 2 it reads 91% / 85% of their shapes (seen /
    held-out pairs). ``zoom``: the data's zoom (1 or 2), recorded so that :func:`evaluate` can
    refuse a model of the other zoom."""
    from ..train import Trainer, seed_everything as train_seed
    if data is None:
        data = shapes_split("all", image_size=image_size, seed=seed + 1, zoom=zoom)
    heads = {a: data.num_classes[a] for a in ATTRIBUTES}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "judge.json"), "w") as f:
        json.dump({"heads": heads, "image_size": image_size, "augment": augment, "zoom": zoom}, f)
    train_seed(seed)
    judge = t2i.AttributeClassifier(heads)

    def step(tr, batch):
        logits = judge(degrade(batch["image"]) if augment else batch["image"])
        losses = {a: torch.nn.functional.cross_entropy(logits[a], batch[a]) for a in ATTRIBUTES}
        loss = sum(losses.values())
        tr.step("judge", loss)
        return {f"loss_{a}": v for a, v in losses.items()}

    Trainer({"judge": judge}, {"judge": torch.optim.Adam(judge.parameters(), lr)}, step, data=data,
            batch_size=batch_size, out_dir=out, seed=seed, device=device, progress=progress,
            checkpoint_every=500).fit(steps, resume=resume)
    return judge.eval()


def judge_meta(checkpoint: str) -> dict:
    """The judge's judge.json: heads, image_size, augment and zoom (1 for judges made before it)."""
    meta = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "judge.json")
    if not os.path.isfile(meta):
        raise FileNotFoundError(f"judge config not found: {meta} (written by `fastpapers text2image judge`)")
    with open(meta) as f:
        return {"zoom": 1, **json.load(f)}


def load_judge(checkpoint: str, device="cpu") -> t2i.AttributeClassifier:
    from ..train import load_checkpoint
    judge = t2i.AttributeClassifier(judge_meta(checkpoint)["heads"])
    load_checkpoint(checkpoint, {"judge": judge})
    return judge.to(device).eval()


@torch.no_grad()
def _predict(judge, images: torch.Tensor, batch_size: int = 256) -> dict:
    preds = {a: [] for a in ATTRIBUTES}
    for i in range(0, len(images), batch_size):
        logits = judge(images[i:i + batch_size])
        for a in ATTRIBUTES:
            preds[a].append(logits[a].argmax(1).cpu())
    return {a: torch.cat(v) for a, v in preds.items()}


def _stack(data, keys, limit=None) -> dict:
    n = len(data) if limit is None else min(limit, len(data))
    items = [data[i] for i in range(n)]
    out = {}
    for k in keys:
        vals = [it[k] for it in items]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else \
            (torch.tensor(vals) if not isinstance(vals[0], str) else vals)
    return out


@torch.no_grad()
def evaluate(checkpoint: str, judge_checkpoint: str, *, n: int = 600, seed: int = 0, device="cpu", data=None) -> dict:
    """Attribute accuracy of generated images on held-out captions (seen and unseen colour–shape
    pairs), judge accuracy on the real test images, style AUC and background transfer accuracy."""
    cfg, nets = load_model(checkpoint, device)
    meta = judge_meta(judge_checkpoint)
    if meta["zoom"] != cfg["zoom"] or meta.get("image_size", cfg["image_size"]) != cfg["image_size"]:
        raise ValueError(f"judge {judge_checkpoint} was trained on images of size {meta.get('image_size')} and zoom "
                         f"{meta['zoom']}, the model {checkpoint} on size {cfg['image_size']} and zoom {cfg['zoom']}")
    judge = load_judge(judge_checkpoint, device)
    if data is None:
        data = shapes_split("test", image_size=cfg["image_size"], seed=seed + 2, zoom=cfg["zoom"])
    test = _stack(data, ("image", "caption", "colour", "kind", "size", "background", "unseen"), limit=n)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(test["caption"]), cfg["nz"], generator=gen).to(device)
    fake = torch.cat([generate(nets, test["caption"][i:i + 256], z[i:i + 256])
                      for i in range(0, len(z), 256)])
    pred_fake = _predict(judge, fake)
    pred_real = _predict(judge, test["image"].to(device))
    unseen = test["unseen"].bool()
    res = {"n": len(z), "n_unseen": int(unseen.sum())}
    for name, pred in (("generated", pred_fake), ("real", pred_real)):
        for group, mask in (("seen", ~unseen), ("unseen", unseen)):
            if mask.sum() == 0:
                continue
            hits = {a: pred[a][mask] == test[a][mask] for a in ("colour", "kind", "size")}
            for a, h in hits.items():
                res[f"{name}/{group}/{a}"] = h.float().mean().item()
            res[f"{name}/{group}/all"] = (hits["colour"] & hits["kind"] & hits["size"]).float().mean().item()
    # Style: does S(x) of real images group them by background (the paper's ROC analysis)?
    style = torch.cat([nets["S"](test["image"][i:i + 256].to(device)).cpu() for i in range(0, len(z), 256)])
    res["style/auc_background"] = t2i.pairwise_auc(style, test["background"])
    # Transfer: G(S(x), φ(another caption)) keeps x's background, judged by the classifier.
    perm = torch.randperm(len(z), generator=gen)
    other = [test["caption"][j] for j in perm.tolist()]
    phi = torch.cat([nets["text"].embed(other[i:i + 256]) for i in range(0, len(z), 256)])
    moved = torch.cat([nets["G"](nets["S"](test["image"][i:i + 256].to(device)), phi[i:i + 256])
                       for i in range(0, len(z), 256)])
    kept = _predict(judge, moved)["background"] == test["background"]
    res["style/transfer_background_acc"] = kept.float().mean().item()
    res["style/transfer_background_chance"] = 1.0 / judge.heads["background"].out_features
    return res


# ---- CLI ---------------------------------------------------------------------------------------

def register(sub):
    p = sub.add_parser("text2image", help="text-to-image GAN (GAN-CLS, GAN-INT, style encoder)",
                       description="Reed et al. 2016 on the shapes world: train, sample from captions, "
                                   "transfer a query image's style, train the judge and evaluate.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    t = verbs.add_parser("train", help="train embedding, GAN and style encoder; writes OUT/model.pt")
    add_common(t, out_default=DEFAULT_OUT, out_help="run folder")
    t.add_argument("--variant", default="gan-int-cls", choices=sorted(VARIANTS), help="(default: gan-int-cls)")
    t.add_argument("--steps", type=int, default=3000, help="GAN training steps (default: 3000)")
    t.add_argument("--embed-steps", type=int, default=1000, help="joint-embedding steps (default: 1000)")
    t.add_argument("--style-steps", type=int, default=1000, help="style-encoder steps (default: 1000)")
    t.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    t.add_argument("--train-size", type=int, default=6000, help="shapes-world training images (default: 6000)")
    t.add_argument("--size", type=int, default=32, choices=(32, 64), help="image size (default: 32)")
    t.add_argument("--width", type=int, default=32, help="ngf = ndf (default: 32)")
    t.add_argument("--upsample", default="deconv", choices=t2i.UPSAMPLE,
                   help="G's upsampling: deconv (the paper) or resize (nearest x2 + 3x3 conv; default: deconv)")
    t.add_argument("--wrong-text", default="random", choices=WRONG_TEXT,
                   help="GAN-CLS wrong texts: random (the paper) or near (differs in one attribute; default: random)")
    t.add_argument("--zoom", type=int, default=1, choices=(1, 2),
                   help="2: object-centred crops of scenes drawn at twice the size (default: 1)")
    t.add_argument("--lr", type=float, default=2e-4, help="Adam step size of G and S (default: 2e-4)")
    t.add_argument("--lr-d", type=float, default=None, help="Adam step size of D (default: --lr)")
    t.add_argument("--real-label", type=float, default=1.0,
                   help="D's target for real images with the right text; < 1 is one-sided label smoothing "
                        "(default: 1, the paper)")
    t.add_argument("--instance-noise", type=float, default=0.0,
                   help="σ of the Gaussian noise added to every image D sees, at step 0 (default: 0, the paper)")
    t.add_argument("--noise-anneal-steps", type=int, default=0,
                   help="σ falls linearly to 0 over this many GAN steps (default: 0 = constant)")
    t.add_argument("--text-encoder", default=None, help="reuse the fixed text encoder of this model.pt")
    t.add_argument("--sample-every", type=int, default=500, help="sample grid every N GAN steps (default: 500)")
    t.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    t.add_argument("--resume", action="store_true", help="continue each stage from its checkpoint")
    t.set_defaults(func=_train_cli)

    s = verbs.add_parser("sample", help="images from captions")
    add_common(s, out_default="text2image_samples.png", out_help="PNG path")
    s.add_argument("--checkpoint", required=True, help="a run's model.pt")
    s.add_argument("--text", action="append", required=True, help='a caption, e.g. "small red star" (repeatable)')
    s.add_argument("--n", type=int, default=8, help="samples per caption (default: 8)")
    s.set_defaults(func=_sample_cli)

    x = verbs.add_parser("transfer", help="render query images' style with new captions: G(S(x), phi(t))")
    add_common(x, out_default="text2image_transfer.png", out_help="PNG path")
    x.add_argument("--checkpoint", required=True, help="a run's model.pt")
    x.add_argument("--text", action="append", required=True, help="a caption (repeatable)")
    x.add_argument("--n", type=int, default=6, help="query images from the shapes test split (default: 6)")
    x.set_defaults(func=_transfer_cli)

    j = verbs.add_parser("judge", help="train the attribute classifier used by eval")
    add_common(j, out_default="runs/text2image_judge", out_help="run folder")
    j.add_argument("--steps", type=int, default=1500, help="training steps (default: 1500)")
    j.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    j.add_argument("--size", type=int, default=32, choices=(32, 64), help="image size (default: 32)")
    j.add_argument("--zoom", type=int, default=1, choices=(1, 2),
                   help="the zoom of the models it will judge (see train --zoom; default: 1)")
    j.add_argument("--augment", action="store_true",
                   help="train on blurred and noisy copies too (a judge robust to imperfect samples)")
    j.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    j.set_defaults(func=_judge_cli)

    e = verbs.add_parser("eval", help="attribute accuracy on held-out captions, style AUC")
    add_common(e, out_default=None, out_help="optional JSON file for the metrics")
    e.add_argument("--checkpoint", required=True, help="a run's model.pt")
    e.add_argument("--judge", required=True, help="the judge's checkpoint.pt")
    e.add_argument("--n", type=int, default=600, help="test captions (default: 600)")
    e.set_defaults(func=_eval_cli)


def _positive(**kw):
    for name, v in kw.items():
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _train_cli(args):
    _positive(steps=args.steps, embed_steps=args.embed_steps, style_steps=args.style_steps,
              batch_size=args.batch_size, width=args.width, train_size=args.train_size)
    data = shapes_split("train", image_size=args.size, n=args.train_size, seed=args.seed, zoom=args.zoom)
    train(args.out, data=data, steps=args.steps, embed_steps=args.embed_steps, style_steps=args.style_steps,
          batch_size=args.batch_size, lr=args.lr, lr_d=args.lr_d, seed=args.seed, device=resolve_device(args.device),
          resume=args.resume, text_encoder=args.text_encoder, sample_every=args.sample_every,
          checkpoint_every=args.checkpoint_every, variant=args.variant, image_size=args.size,
          ngf=args.width, ndf=args.width, real_label=args.real_label,
          instance_noise=args.instance_noise, noise_anneal_steps=args.noise_anneal_steps, zoom=args.zoom,
          upsample=args.upsample, wrong_text=args.wrong_text)
    print(f"wrote {os.path.join(args.out, 'model.pt')}")
    return 0


def _sample_cli(args):
    seed_everything(args.seed)
    print("wrote", sample(args.checkpoint, args.text, args.out, n=args.n, seed=args.seed,
                          device=resolve_device(args.device)))
    return 0


def _transfer_cli(args):
    seed_everything(args.seed)
    _positive(n=args.n)
    print("wrote", transfer(args.checkpoint, args.text, args.out, n=args.n, seed=args.seed,
                            device=resolve_device(args.device)))
    return 0


def _judge_cli(args):
    _positive(steps=args.steps, batch_size=args.batch_size)
    train_judge(args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                device=resolve_device(args.device), resume=args.resume, image_size=args.size,
                augment=args.augment, zoom=args.zoom)
    print(f"wrote {os.path.join(args.out, 'checkpoint.pt')}")
    return 0


def _eval_cli(args):
    _positive(n=args.n)
    res = evaluate(args.checkpoint, args.judge, n=args.n, seed=args.seed, device=resolve_device(args.device))
    for k, v in res.items():
        print(f"{k:40s} {v:.4f}" if isinstance(v, float) else f"{k:40s} {v}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {args.out}")
    return 0

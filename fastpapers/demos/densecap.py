"""DenseCap demo: the shipped shapes-world model (``fastpapers/weights/densecap``, checked
against its SHA-256) draws its boxes and captions on held-out canvases; with ``--train`` the
model is instead trained for a few seconds (or ``runs/densecap``'s checkpoint is loaded)."""
import os
import tempfile
import time

import torch

ORDER = 70
TITLE = "DenseCap: boxes and captions on shapes-world canvases"
SECONDS = 8.0
WEIGHTS = "densecap"
MIN_SCORE = 0.25


def run_shipped(out_dir, *, device, seed):
    from .. import weights
    loaded = weights.load(WEIGHTS, device=device)
    m = weights.entry(WEIGHTS)["metrics"]
    print(f"   loaded the shipped model ({weights.path(WEIGHTS)}): held-out mAP {m['map']:.3f} "
          f"({m['language']}), detection mAP {m['det_map']:.3f}")
    return _draw(loaded.nets["densecap"], out_dir, device=device, seed=seed)


def run(out_dir, *, device, seed):
    from ..data.shapes import ShapesDense, shapes_vocabulary
    from ..models.densecap import shapes_model
    from ..recipes.densecap import make_trainer
    from ..train import load_checkpoint

    size = 64
    ckpt = os.path.join("runs", "densecap", "checkpoint.pt")
    model = shapes_model(shapes_vocabulary())
    if os.path.isfile(ckpt):
        load_checkpoint(ckpt, {"densecap": model})
        print(f"   loaded {ckpt}")
    else:
        data = ShapesDense(512, size=size, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            tr = make_trainer(model, data, out_dir=tmp, batch_size=8, seed=seed, device=device, log_every=10 ** 6,
                              checkpoint_every=0, progress=False)
            t0, steps = time.perf_counter(), 0
            while time.perf_counter() - t0 < SECONDS:
                steps += 10
                tr.fit(steps)
        print(f"   trained {steps} steps in {time.perf_counter() - t0:.1f} s (no checkpoint at {ckpt})")
    return _draw(model.to(device).eval(), out_dir, device=device, seed=seed)


def _draw(model, out_dir, *, device, seed, size=64):
    from ..data.shapes import ShapesDense
    from ..viz import draw_boxes, hstack
    test = ShapesDense(4, size=size, split="test", seed=seed)
    images = torch.stack([test[i]["image"] for i in range(4)])
    res = model.predict(images.to(device), max_detections=4)
    panels = []
    for img, r in zip(images, res):
        # The confident detections (at least the top one): low-score boxes only clutter the panel.
        keep = [i for i, s in enumerate(r["scores"].tolist()) if s >= MIN_SCORE or i == 0]
        panels.append(draw_boxes(img, r["boxes"][keep].cpu(),
                                 [f"{r['captions'][i]} {r['scores'][i].item():.2f}" for i in keep], scale=4))
    path = os.path.join(out_dir, "densecap.png")
    hstack(panels).save(path)
    return [path]

"""DenseCap demo: train the shapes-world model for a few seconds (or load ``runs/densecap``'s
checkpoint when one exists) and draw its boxes and captions on test canvases."""
import os
import tempfile
import time

import torch

ORDER = 70
TITLE = "DenseCap: boxes and captions on shapes-world canvases"
SECONDS = 8.0


def run(out_dir, *, device, seed):
    from ..data.shapes import ShapesDense, shapes_vocabulary
    from ..models.densecap import shapes_model
    from ..recipes.densecap import make_trainer
    from ..train import load_checkpoint
    from ..viz import draw_boxes, hstack

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
    model = model.to(device).eval()
    test = ShapesDense(4, size=size, split="test", seed=seed)
    images = torch.stack([test[i]["image"] for i in range(4)])
    res = model.predict(images.to(device), max_detections=4)
    panels = [draw_boxes(img, r["boxes"].cpu(), [f"{c} {s:.2f}" for c, s in zip(r["captions"], r["scores"].tolist())],
                         scale=4) for img, r in zip(images, res)]
    path = os.path.join(out_dir, "densecap.png")
    hstack(panels).save(path)
    return [path]

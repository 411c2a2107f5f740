"""Text-to-image demo: images for captions (including a colour-shape pair held out of training)
and a style transfer, from the model that `fastpapers text2image train` writes to its default
folder when there is one, otherwise from a seconds-long GAN-INT-CLS run on the shapes world."""
import os

from ._rundir import run_dir

ORDER = 40
TITLE = "Text-to-image GAN-INT-CLS (Reed et al. 2016): captions -> shapes, style transfer"
CAPTIONS = ["a small red circle", "a large blue square", "a large red triangle (held out)"]


def run(out_dir, *, device, seed):
    from ..recipes import text2image as T
    # The default --out of `fastpapers text2image train`, relative to the working directory.
    model = os.path.join(T.DEFAULT_OUT, "model.pt")
    if os.path.isfile(model):
        note = f"model: {model} (your trained run)"
    else:
        # Tiny nets and a few dozen steps keep this to seconds; resume makes a second demo load
        # the finished run. This is far too short to draw shapes (that takes a few hundred
        # steps, see docs/results.md): its samples are grey noise; the step shows the pipeline.
        cfg = dict(steps=40, embed_steps=40, style_steps=10, batch_size=32, seed=seed, sample_every=0,
                   checkpoint_every=40, ngf=8, ndf=8, embed_dim=32, text_width=32, lr=5e-4)
        folder = run_dir(out_dir, "text2image_run", **cfg)
        data = T.shapes_split("train", image_size=32, n=256, seed=seed)
        model = T.train(T.Config(**cfg), folder, data=data, device=device, resume=True, progress=False)
        note = ("a 40-step run (seconds): grey noise, not yet shapes; train for real with "
                "`fastpapers text2image train` (then this demo uses runs/text2image/model.pt)")
    captions = [c.replace(" (held out)", "") for c in CAPTIONS]
    [samples] = T.sample(model, captions, os.path.join(out_dir, "text2image_samples.png"), n=6, seed=seed,
                         device=device)
    [transfer] = T.transfer(model, captions[:2], os.path.join(out_dir, "text2image_transfer.png"), n=4, seed=seed,
                            device=device)
    print(f"   rows: {CAPTIONS}; {note}")
    return [samples, transfer]

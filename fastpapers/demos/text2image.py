"""Text-to-image demo: a short GAN-INT-CLS run on the shapes world (300 GAN steps, about a
minute on a loaded 2-core CPU), then images for captions (including a colour-shape pair held
out of training) and a style transfer."""
import os

ORDER = 40
TITLE = "Text-to-image GAN-INT-CLS (Reed et al. 2016): captions -> shapes, style transfer"
CAPTIONS = ["a small red circle", "a large blue square", "a large red triangle (held out)"]


def run(out_dir, *, device, seed):
    from ..commands import text2image as T
    run_dir = os.path.join(out_dir, "text2image_run")
    # A short run; --resume semantics make a second demo load the finished checkpoint instantly.
    data = T.shapes_split("train", image_size=32, n=512, seed=seed)
    T.train(run_dir, steps=300, embed_steps=100, style_steps=30, batch_size=32, data=data, seed=seed, device=device,
            resume=True, progress=False, sample_every=0, checkpoint_every=300, ngf=8, ndf=8, embed_dim=32,
            text_width=48, lr=5e-4)
    model = os.path.join(run_dir, "model.pt")
    captions = [c.replace(" (held out)", "") for c in CAPTIONS]
    samples = T.sample(model, captions, os.path.join(out_dir, "text2image_samples.png"), n=6, seed=seed,
                       device=device)
    transfer = T.transfer(model, captions[:2], os.path.join(out_dir, "text2image_transfer.png"), n=4, seed=seed,
                          device=device)
    print(f"   rows: {CAPTIONS}; a 300-step run learns background-like washes, not yet shapes; "
          f"`fastpapers text2image train` trains for real")
    return [samples, transfer]

"""Neural style demo: the astronaut in the brick texture's style, 128 px, a few L-BFGS steps."""
import os

ORDER = 30
TITLE = "Neural style (Gatys et al.): astronaut x brick, 128 px, VGG-16 (HED weights), L-BFGS"


def run(out_dir, *, device, seed):
    from PIL import Image

    from ..models import neural_style as ns
    from ..recipes import neural_style as R
    from ..viz import hstack, to_uint8

    # Starting from the content image shows the style arriving within a few iterations.
    cfg = R.Config(content="skimage:astronaut", style=["skimage:brick"], size=128, iters=8, init="content",
                   style_weight=1000.0, seed=seed)
    out, history = R.transfer(cfg, device=device, progress=False)
    first, last = history[0], history[-1]
    print(f"   style loss {first['style']:.4g} -> {last['style']:.4g}, content loss "
          f"{first['content']:.4g} -> {last['content']:.4g} in {cfg.iters} L-BFGS iterations")
    small = [ns._resize_long(ns.load_image(s), 128) for s in (cfg.content, cfg.style[0])]
    panels = [Image.fromarray(to_uint8(im)) for im in small + [out]]
    path = os.path.join(out_dir, "style_astronaut_brick.png")
    hstack(panels).save(path)
    return [path]

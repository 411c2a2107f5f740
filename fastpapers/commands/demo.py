"""``fastpapers demo``: every paper's short showcase on the embedded defaults.

A step whose paper ships trained weights (:mod:`fastpapers.weights`) loads them, checked
against the manifest's SHA-256, and shows them at work; ``--train`` trains every step's model
in the demo instead, for a few seconds each."""
import importlib
import os
import pkgutil
import time

from ._common import add_common, resolve_device, seed_everything


def _steps():
    from .. import demos
    mods = []
    for info in pkgutil.iter_modules(demos.__path__):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{demos.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: (m.ORDER, m.__name__))


def _shipped(mod) -> bool:
    """Whether a demo step has trained weights in fastpapers/weights/ to show."""
    from .. import weights
    name = getattr(mod, "WEIGHTS", None)
    return name is not None and name in weights.papers()


def register(sub):
    names = ", ".join(m.__name__.rsplit(".", 1)[1] for m in _steps())
    p = sub.add_parser("demo", help="run every paper's short demo and write PNGs",
                       description=f"Demo steps: {names}.")
    add_common(p, out_default="demo_out", out_help="folder for the PNGs")
    p.add_argument("--only", default=None, help=f"comma-separated subset of steps ({names})")
    p.add_argument("--train", action="store_true",
                   help="train each paper's model in the demo instead of loading the weights that ship in "
                        "fastpapers/weights/ (slower, and seconds of training show far less)")
    p.set_defaults(func=run)


def run(args):
    steps = _steps()
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        known = {m.__name__.rsplit(".", 1)[1]: m for m in steps}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ValueError(f"--only names unknown demo steps {unknown}; known: {sorted(known)}")
        steps = [known[w] for w in wanted]
    device = resolve_device(args.device)
    os.makedirs(args.out, exist_ok=True)
    for mod in steps:
        seed_everything(args.seed)
        t0 = time.perf_counter()
        print(f"== {mod.TITLE}")
        if _shipped(mod) and not args.train:
            written = mod.run_shipped(args.out, device=device, seed=args.seed)
        else:
            written = mod.run(args.out, device=device, seed=args.seed)
        for path in written:
            print(f"   wrote {path}")
        print(f"   ({time.perf_counter() - t0:.1f} s)")

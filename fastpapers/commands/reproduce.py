"""``fastpapers reproduce PAPER|all``: each paper's headline comparison over several
replicates, written to ``--out/<paper>/`` (results.json, README.md, figures); the runs
themselves go to ``--runs``. The work is in :mod:`fastpapers.reproduce`."""
from ._common import device_name, nonempty_path, positive_float, resolve_device


def register(sub):
    from ..reproduce import PAPERS

    p = sub.add_parser("reproduce", help="rerun a paper's headline comparison (results.json, README.md, PNGs)",
                       description=__doc__)
    p.add_argument("paper", choices=list(PAPERS) + ["all"], help="the paper, or all of them")
    p.add_argument("--out", type=nonempty_path, default="docs/results",
                   help="folder for <paper>/results.json, README.md and figures (default: %(default)s)")
    p.add_argument("--runs", type=nonempty_path, default="runs/reproduce",
                   help="folder for the run folders (default: %(default)s)")
    p.add_argument("--budget-scale", type=positive_float, default=1.0,
                   help="multiply every run's budget (steps, iterations) by this (default: %(default)s)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs and continue unfinished ones from their checkpoints")
    p.add_argument("--variants", nargs="+", default=None, help="only these variants (default: all)")
    p.set_defaults(func=run)


def run(args):
    from .. import reproduce as P

    device = str(resolve_device(args.device))
    P.load_protocols()
    if args.paper == "all":
        if args.variants is not None:
            raise ValueError("--variants names one paper's variants: give a PAPER, not all")
        papers = [p for p in P.PAPERS if p in P.PROTOCOLS]
        missing = [p for p in P.PAPERS if p not in P.PROTOCOLS]
        if missing:
            print(f"no reproduction protocol yet for: {', '.join(missing)} (skipped)")
    elif args.paper not in P.PROTOCOLS:
        raise ValueError(f"PAPER {args.paper} has no reproduction protocol yet; available: {sorted(P.PROTOCOLS)}")
    else:
        papers = [args.paper]
    for paper in papers:
        results = P.reproduce(paper, out_dir=args.out, runs_dir=args.runs, budget_scale=args.budget_scale,
                              device=device, resume=args.resume, variants=args.variants)
        print(f"wrote {args.out}/{paper}/results.json ({len(results['runs'])} runs)")

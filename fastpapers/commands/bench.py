import os
import subprocess
import sys


def register(sub):
    p = sub.add_parser("bench", help="run the pytest-benchmark speed runs (peer vs ours) from a source checkout")
    p.add_argument("-k", default=None, help="only benchmarks matching this pytest expression")
    p.add_argument("--json", default="benchmarks/results.json", help="where to save the JSON (default: %(default)s)")
    p.set_defaults(func=run)


def run(args):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    bench_dir = os.path.join(root, "benchmarks")
    if not os.path.isdir(bench_dir):
        raise FileNotFoundError(f"no benchmarks/ folder next to the package ({bench_dir}); "
                                "run `fastpapers bench` from a source checkout")
    cmd = [sys.executable, "-m", "pytest", bench_dir, "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={args.json}", "--benchmark-columns=min,median,max,rounds"]
    if args.k:
        cmd += ["-k", args.k]
    return subprocess.call(cmd, cwd=root)

"""``fastpapers reproduce PAPER``: each paper's headline comparison on its offline proxy, rerunnable.

A :class:`Protocol` names the variants the paper compares, the replicates (seeds, or image
pairs for neural style), the budget (config fields that ``budget_scale`` multiplies, the same
for every variant) and, where the issue asks for one, a sweep of one setting given to every
variant alike (MIXER's learning rate: each variant is reported at the value that is best on
its *validation* score). :func:`reproduce` trains and evaluates every (variant, sweep value,
replicate) through the paper's recipe, one run folder each under ``runs_dir``, and writes::

    <out_dir>/<paper>/results.json   every number with its variant, replicate, seed, settings,
                                     training and evaluation CPU seconds (time.process_time),
                                     the commit and the command line
    <out_dir>/<paper>/README.md      the table: mean ± standard deviation over replicates
    <out_dir>/<paper>/*.png          the headline bar chart and the paper's own figures

Each run folder holds ``job.json`` (its settings, written when it starts) and, once scored,
``result.json``. ``resume=True`` reuses finished runs and continues unfinished ones from their
checkpoints, so an interrupted reproduction never redoes finished work; a stored run made with
other settings (another budget scale, say) is refused by name, never mixed in. Without
``resume`` an existing run folder is refused (nothing is overwritten).
"""
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ..train.checkpoint import atomic_save_json, read_json_file

__all__ = ["Protocol", "PROTOCOLS", "PAPERS", "reproduce", "summarise", "register", "load_protocols"]


@dataclass
class Protocol:
    """One paper's headline comparison.

    ``train(config: dict, run_dir, *, device, progress, resume) -> handle`` trains one variant
    in ``run_dir`` (``resume``: continue the run there); ``evaluate(handle, config, *, device)
    -> {metric: float}`` scores it. ``config`` is ``base`` + the scaled ``budget`` + the
    variant's and the replicate's settings (+ the sweep value). The two are timed apart.
    ``figures(out_dir, results, runs_dir, device=...)`` may draw paper-specific PNGs and return
    their paths.
    """
    paper: str
    claim: str
    variants: Dict[str, dict]
    train: Callable[..., object]
    evaluate: Callable[..., Dict[str, float]]
    metrics: Sequence[str]
    headline: str
    base: dict = field(default_factory=dict)
    budget: Dict[str, int] = field(default_factory=dict)
    replicates: Dict[str, dict] = field(default_factory=lambda: {f"seed{s}": {"seed": s} for s in range(3)})
    sweep: Optional[Dict[str, list]] = None       # {"lr": [...]}: the same values for every variant
    select_by: Optional[str] = None               # validation metric that picks the sweep value
    higher_is_better: bool = True
    notes: str = ""
    figures: Optional[Callable[..., List[str]]] = None


PROTOCOLS: Dict[str, Protocol] = {}
# One module per paper in this package defines and registers its protocol.
PAPERS = ("mixer", "text2image", "neural_style", "gran", "lapgan", "semantic_attention", "densecap")


def register(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.paper] = protocol
    return protocol


def load_protocols() -> Dict[str, Protocol]:
    """Import every paper's protocol module that exists (each registers itself)."""
    import importlib
    for paper in PAPERS:
        if paper not in PROTOCOLS:
            try:
                importlib.import_module(f"{__name__}.{paper}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{paper}":
                    raise
    return PROTOCOLS


def _commit() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from .. import __version__
    return f"fastpapers {__version__} (not a git checkout)"


def _scaled(budget: Dict[str, int], scale: float) -> dict:
    return {k: max(1, int(round(v * scale))) for k, v in budget.items()}


def _sweep_points(protocol: Protocol) -> List[dict]:
    if not protocol.sweep:
        return [{}]
    (name, values), = protocol.sweep.items()
    return [{name: v} for v in values]


def _label(point: dict) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def reproduce(paper: str, *, out_dir: str = "docs/results", runs_dir: str = "runs/reproduce",
              budget_scale: float = 1.0, device: str = "cpu", resume: bool = False, progress: bool = True,
              command: Optional[str] = None, variants: Optional[Sequence[str]] = None) -> dict:
    """Run ``paper``'s protocol; returns the results written to ``<out_dir>/<paper>/results.json``."""
    load_protocols()
    if paper not in PROTOCOLS:
        raise ValueError(f"paper must be one of {sorted(PROTOCOLS)} or 'all', got {paper!r}")
    if not (isinstance(budget_scale, (int, float)) and math.isfinite(budget_scale) and budget_scale > 0):
        raise ValueError(f"--budget-scale must be a positive number, got {budget_scale!r}")
    protocol = PROTOCOLS[paper]
    chosen = list(protocol.variants) if variants is None else list(variants)
    unknown = [v for v in chosen if v not in protocol.variants]
    if unknown:
        raise ValueError(f"--variants {unknown} are not variants of {paper}; known: {list(protocol.variants)}")
    budget = _scaled(protocol.budget, budget_scale)
    points = _sweep_points(protocol)
    jobs = [(v, p, r) for v in chosen for p in points for r in protocol.replicates]
    commit = _commit()
    if command is None:
        command = " ".join(["fastpapers reproduce", paper, f"--budget-scale {budget_scale:g}", f"--device {device}",
                            f"--out {out_dir}", f"--runs {runs_dir}"]
                           + ([f"--variants {' '.join(repr(v) for v in chosen)}"] if variants is not None else []))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(jobs), desc=f"reproduce {paper}", unit="run")
    rows = []
    for variant, point, rep in jobs:
        parts = [runs_dir, paper, variant.replace(" ", "_")] + ([_label(point)] if point else []) + [rep]
        run_dir = os.path.join(*parts)
        config = {**protocol.base, **budget, **protocol.variants[variant], **protocol.replicates[rep], **point}
        rows.append(_one_job(protocol, variant, rep, point, config, run_dir, device=device, resume=resume,
                             commit=commit))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = {"paper": paper, "claim": protocol.claim, "commit": commit, "command": command,
               "budget_scale": budget_scale, "budget": budget, "device": device, "sweep": protocol.sweep,
               "select_by": protocol.select_by, "runs": rows}
    results["summary"] = summarise(protocol, rows)
    folder = os.path.join(out_dir, paper)
    os.makedirs(folder, exist_ok=True)
    # The numbers are written before any figure is drawn: a figure can never cost the results.
    atomic_save_json(results, os.path.join(folder, "results.json"), indent=1)
    figures = [_headline_figure(protocol, results["summary"], folder)]
    if protocol.figures is not None:
        figures += protocol.figures(folder, results, os.path.join(runs_dir, paper), device=device)
    results["figures"] = [os.path.basename(f) for f in figures]
    atomic_save_json(results, os.path.join(folder, "results.json"), indent=1)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(_readme(protocol, results))
    return results


def _differing(a: dict, b: dict) -> List[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _one_job(protocol: Protocol, variant, rep, point, config, run_dir, *, device, resume, commit) -> dict:
    """Train and evaluate one (variant, sweep value, replicate), or reuse its finished result.

    ``job.json`` records the settings when the run starts, ``result.json`` when it is scored;
    both are compared with the settings asked for now, so a resume never mixes budgets."""
    done, job = os.path.join(run_dir, "result.json"), os.path.join(run_dir, "job.json")
    for path in (done, job):
        if os.path.isfile(path):
            if not resume:
                raise ValueError(f"{run_dir} already holds a reproduction run: pass --resume to reuse or "
                                 "continue it, or choose another --runs folder")
            stored = read_json_file(path, what="reproduction record")
            differ = _differing(stored.get("config", {}), config)
            if differ:
                raise ValueError(f"--resume: the run in {run_dir} was made with other settings of {differ} "
                                 f"({ {k: stored.get('config', {}).get(k) for k in differ} }, now "
                                 f"{ {k: config.get(k) for k in differ} }); choose another --runs folder")
            if path == done:
                return stored
    resumed = os.path.isfile(job)
    if not resumed:
        os.makedirs(run_dir, exist_ok=True)
        atomic_save_json({"config": config, "commit": commit}, job)
    t0 = time.process_time()
    handle = protocol.train(config, run_dir, device=device, progress=False, resume=resumed)
    t1 = time.process_time()
    metrics = protocol.evaluate(handle, config, device=device)
    t2 = time.process_time()
    row = {"variant": variant, "replicate": rep, "sweep": point, "config": config, "commit": commit,
           # A resumed run's training time counts only the attempt that finished it.
           "resumed": resumed, "train_cpu_seconds": round(t1 - t0, 2), "eval_cpu_seconds": round(t2 - t1, 2),
           "metrics": metrics}
    atomic_save_json(row, done)
    return row


def _mean_std(values: List[float]):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None, 0
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd, len(values)


def summarise(protocol: Protocol, rows: List[dict]) -> Dict[str, dict]:
    """Per variant: the chosen sweep value (best mean validation score) and, for each metric,
    mean, standard deviation and count over the replicates at that value."""
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        points = list({json.dumps(r["sweep"], sort_keys=True): r["sweep"] for r in mine}.values())
        best = points[0]
        if len(points) > 1 and protocol.select_by:
            sign = 1.0 if protocol.higher_is_better else -1.0

            def score(p):
                m, _, _ = _mean_std([r["metrics"].get(protocol.select_by) for r in mine if r["sweep"] == p])
                return -math.inf if m is None else sign * m
            best = max(points, key=score)
        at = [r for r in mine if r["sweep"] == best]
        stats = {}
        for name in protocol.metrics:
            m, sd, n = _mean_std([r["metrics"].get(name) for r in at])
            stats[name] = {"mean": m, "std": sd, "n": n}
        out[variant] = {"sweep": best, "metrics": stats, "replicates": len(at),
                        "train_cpu_seconds": round(sum(_train_cpu(r) for r in at) / max(len(at), 1), 1),
                        "resumed": sum(bool(r.get("resumed")) for r in at)}
    return out


def _train_cpu(row: dict) -> float:
    # Rows written before training and evaluation were timed apart hold one total.
    return row["train_cpu_seconds"] if "train_cpu_seconds" in row else row["cpu_seconds"]


def _fmt(stat, total: int) -> str:
    if stat["mean"] is None:
        return f"– (0/{total})"
    text = f"{stat['mean']:.3f} ± {stat['std']:.3f}"
    return text if stat["n"] == total else f"{text} ({stat['n']}/{total})"


def _headline_figure(protocol: Protocol, summary: dict, folder: str) -> str:
    from ..viz import bar_chart
    names = [v for v in summary if summary[v]["metrics"][protocol.headline]["mean"] is not None]
    means = [summary[v]["metrics"][protocol.headline]["mean"] for v in names]
    errs = [summary[v]["metrics"][protocol.headline]["std"] for v in names]
    return bar_chart(names, means, errs, os.path.join(folder, f"{protocol.headline}.png"),
                     title=f"{protocol.paper}: {protocol.headline}, mean +- sd over replicates")


def _readme(protocol: Protocol, results: dict) -> str:
    summary = results["summary"]
    made = sorted({r.get("commit") for r in results["runs"] if r.get("commit")} - {results["commit"]})
    lines = [f"# {protocol.paper}: reproduction", "", f"Claim: {protocol.claim}", "",
             f"Command: `{results['command']}` at commit {results['commit']}"
             + (f" (runs made at {', '.join(made)})" if made else "") + ", budget scale "
             f"{results['budget_scale']:g} ({', '.join(f'{k} {v}' for k, v in results['budget'].items())}), "
             f"device {results['device']}, replicates: {', '.join(protocol.replicates)}.", ""]
    if protocol.sweep:
        (name, values), = protocol.sweep.items()
        lines += [f"Every variant ran at {name} = {', '.join(map(str, values))}; the table shows each at the "
                  f"value with the best mean `{protocol.select_by}`.", ""]
    # Rows recorded before training and evaluation were timed apart carry one total.
    together = any("train_cpu_seconds" not in r for r in results["runs"])
    cpu_col = "CPU s / run (training + evaluation)" if together else "train CPU s / run"
    header = ["variant"] + (["chosen"] if protocol.sweep else []) + list(protocol.metrics) + [cpu_col]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, s in summary.items():
        cells = [variant] + ([_label(s["sweep"])] if protocol.sweep else [])
        cells += [_fmt(s["metrics"][m], s["replicates"]) for m in protocol.metrics] + [f"{s['train_cpu_seconds']:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± standard deviation over the replicates (n/N where some replicate gave no number); "
              "every number, per run, is in `results.json`. Training CPU seconds are `time.process_time()` of "
              "the training call (the first run of a process also pays one-time import and weight-loading "
              "costs; a resumed run counts only the attempt that finished it).", ""]
    if protocol.notes:
        lines += [protocol.notes, ""]
    lines += [f"![{f}]({f})" for f in results.get("figures", [])]
    return "\n".join(lines) + "\n"

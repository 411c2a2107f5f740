"""pytest-benchmark glue: one timing policy for every case, and the peer-vs-ours table.

Every benchmark labels itself with :func:`tag` (case name, ``impl`` "peer" or "ours", the
peer's name, and ``work``: what both sides compute and hand back) and times itself with
:func:`measure`, which

- makes the warm-up calls (JIT compilation, cuBLAS/cuDNN set-up, allocator growth) outside
  the timed region; under ``--benchmark-disable`` it makes one plain call and times nothing;
- times whole calls of the function it is given; on CUDA each benchmark's function ends with
  ``torch.cuda.synchronize()`` on both sides (:func:`sync`), so a call's time includes its
  kernels;
- takes ``min(rounds, max(--benchmark-min-rounds, ceil(--benchmark-max-time / t)))`` rounds,
  t the fastest warm-up call: ``rounds`` is the case's own count, the two options cap the
  time per case as pytest-benchmark documents them (defaults 5 rounds, 1 s);
- records the chip-limit figures a case supplies (DRAM bytes, matrix FLOPs) as rates and
  fractions of the card's peak (benchmarks/gpu/peaks.py).

The table (case, peer, what each side computes, peer and ours medians, speed-up, ours
against the chip limit) is printed at the end of the run and rewritten to
benchmarks/table.md (or $FASTPAPERS_BENCH_TABLE) after every timed case, so a run cut short
keeps the cases it finished. JSON comes from --benchmark-json.
"""
import functools
import math
import os
import subprocess
import time

os.environ.setdefault("TRITON_INTERPRET", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu.peaks import rate_text  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_OPTS = {"max_time": 1.0, "min_rounds": 5}
_ROWS = {}  # case -> {"peer": s, "ours": s, "peer_name": str, "work": str, "rate": str}


def pytest_configure(config):
    for key, opt in (("max_time", "benchmark_max_time"), ("min_rounds", "benchmark_min_rounds")):
        try:
            _OPTS[key] = float(config.getoption(opt))
        except (ValueError, TypeError):
            pass


def sync():
    """End of a timed call: wait for the device's queued kernels (a no-op on the CPU)."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def tag(benchmark, case: str, impl: str, peer_name: str = "", work: str = ""):
    """Label a benchmark for the summary table (impl is 'peer' or 'ours')."""
    assert impl in ("peer", "ours"), impl
    benchmark.group = case
    benchmark.extra_info.update(case=case, impl=impl)
    if peer_name:
        benchmark.extra_info["peer_name"] = peer_name
    if work:
        benchmark.extra_info["work"] = work


@pytest.fixture
def bench_tag():
    return tag


def device_name() -> str:
    return torch.cuda.get_device_name(0) if DEVICE == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def tf32_products() -> bool:
    return DEVICE == "cuda" and torch.backends.cuda.matmul.allow_tf32


def measure(benchmark, fn, *, rounds: int, warmup: int = 1, nbytes=None, flops=None, dtype="float32"):
    """Time ``fn()`` (which must end with :func:`sync`) under the policy of this module.

    ``nbytes``: DRAM bytes of one call, an int or a dict of named counts (the first named one
    is the table's); ``flops``: matrix FLOPs of one call in ``dtype``. Returns fn's result."""
    if getattr(benchmark, "disabled", False):
        return benchmark.pedantic(fn, rounds=1)  # one plain call, nothing timed
    best = math.inf
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    n = min(rounds, max(int(_OPTS["min_rounds"]), math.ceil(_OPTS["max_time"] / max(best, 1e-9))))
    out = benchmark.pedantic(fn, rounds=max(1, n), warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    if stats is None:
        return out
    median = stats.stats.median
    info = benchmark.extra_info
    rate = ""
    if nbytes is not None:
        counts = nbytes if isinstance(nbytes, dict) else {"compulsory": nbytes}
        texts = []
        for key, b in counts.items():
            info[f"bytes_{key}"] = b
            info[f"gbps_{key}"] = b / median / 1e9
            texts.append(f"{key} " + rate_text(median, nbytes=b, device_name=device_name()))
        rate = "; ".join(texts)
    elif flops is not None:
        info["flops"] = flops
        info["tflops"] = flops / median / 1e12
        rate = rate_text(median, flops=flops, device_name=device_name(), dtype=str(dtype), tf32=tf32_products())
    _record(info, median, rate)
    return out


def _record(info, median, rate):
    case, impl = info.get("case"), info.get("impl")
    if not case or impl not in ("peer", "ours"):
        return
    row = _ROWS.setdefault(case, {"peer": None, "ours": None, "peer_name": "", "work": "", "rate": ""})
    row[impl] = median
    for key in ("peer_name", "work"):
        if info.get(key):
            row[key] = info[key]
    if impl == "ours" and rate:
        row["rate"] = rate
    _write_table()


@functools.lru_cache(maxsize=None)
def _commit():
    """$FASTPAPERS_COMMIT (for a copy of the tree without .git, as on the lent GPU), else git's."""
    if os.environ.get("FASTPAPERS_COMMIT"):
        return os.environ["FASTPAPERS_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(__file__)).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fmt_ms(sec):
    return "-" if sec is None else f"{sec * 1e3:.3f}"


def table_text() -> str:
    policy = ""
    if DEVICE == "cuda":
        policy = (f", TF32 matmul {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, "
                  f"cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'}")
    lines = [f"fastpapers benchmarks on {device_name()}, torch {torch.__version__}, commit {_commit()}{policy}", "",
             "| case | peer | what each side computes | peer median (ms) | ours median (ms) | speed-up "
             "| ours vs chip limit |",
             "|---|---|---|---|---|---|---|"]
    for case, r in _ROWS.items():
        ratio = f"{r['peer'] / r['ours']:.2f}x" if r["peer"] and r["ours"] else "-"
        lines.append(f"| {case} | {r['peer_name'] or '-'} | {r['work'] or '-'} | {_fmt_ms(r['peer'])} | "
                     f"{_fmt_ms(r['ours'])} | {ratio} | {r['rate'] or '-'} |")
    return "\n".join(lines)


def _table_path():
    return os.environ.get("FASTPAPERS_BENCH_TABLE", os.path.join(os.path.dirname(__file__), "table.md"))


def _write_table():
    with open(_table_path(), "w") as f:
        f.write(table_text() + "\n")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _ROWS:
        return
    terminalreporter.write_sep("=", "fastpapers: peer vs ours")
    terminalreporter.write_line(table_text())
    terminalreporter.write_line(f"(written to {_table_path()})")

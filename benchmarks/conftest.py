"""pytest-benchmark glue: every benchmark tags itself with a case name and `impl` ("peer" or
"ours"); at the end of the run a table pairs them: case, peer median, ours median, ratio.
The table is printed and written to benchmarks/table.md (JSON comes from --benchmark-json)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tag(benchmark, case: str, impl: str, peer_name: str = ""):
    """Label a benchmark for the summary table (impl is 'peer' or 'ours')."""
    benchmark.group = case
    benchmark.extra_info["case"] = case
    benchmark.extra_info["impl"] = impl
    if peer_name:
        benchmark.extra_info["peer_name"] = peer_name


@pytest.fixture
def bench_tag():
    return tag


def _fmt_ms(sec):
    return "-" if sec is None else f"{sec * 1e3:.3f}"


def summary_rows(benchmarks):
    rows = {}
    for b in benchmarks:
        info = getattr(b, "extra_info", {}) or {}
        case, impl = info.get("case"), info.get("impl")
        if not case or impl not in ("peer", "ours") or b.stats is None:
            continue
        row = rows.setdefault(case, {"peer": None, "ours": None, "peer_name": ""})
        row[impl] = b.stats.median
        if info.get("peer_name"):
            row["peer_name"] = info["peer_name"]
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = summary_rows(session.benchmarks)
    if not rows:
        return
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (%d threads)" % torch.get_num_threads()
    lines = [f"fastpapers benchmarks on {device}, torch {torch.__version__}", "",
             "| case | peer | peer median (ms) | ours median (ms) | speed-up |", "|---|---|---|---|---|"]
    for case, r in rows.items():
        ratio = f"{r['peer'] / r['ours']:.2f}x" if r["peer"] and r["ours"] else "-"
        lines.append(f"| {case} | {r['peer_name'] or '-'} | {_fmt_ms(r['peer'])} | {_fmt_ms(r['ours'])} | {ratio} |")
    text = "\n".join(lines)
    terminalreporter.write_sep("=", "fastpapers: peer vs ours")
    terminalreporter.write_line(text)
    out = os.environ.get("FASTPAPERS_BENCH_TABLE", os.path.join(os.path.dirname(__file__), "table.md"))
    with open(out, "w") as f:
        f.write(text + "\n")

#!/usr/bin/env bash
# The one way GPU results of fastpapers are produced: build in place with the machine's own
# torch (CUDA kernels on), run the CUDA test cases, run the GPU benchmarks, print one table.
# Usage: bash benchmarks/gpu/run.sh [OUT_DIR]     (OUT_DIR defaults to ${OUT:-gpu_out})
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt"
$PY -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device visible"; exit 1; }

# Build: the peers and test tools are installed only if missing (the GPU host may have no network).
$PY -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -3 || true
MAX_JOBS=${MAX_JOBS:-16} FORCE_CUDA=1 $PY setup.py -q build_ext --inplace 2>&1 | tail -5
$PY -c "import fastpapers, json; print(json.dumps(fastpapers.info(), indent=1))" | tee "$OUT_DIR/info.json"

# CUDA test cases only (CPU cases ran in CI); Triton runs compiled, not interpreted.
export TRITON_INTERPRET=0
timeout 300 $PY -m pytest tests -q -p no:cacheprovider -k "cuda" -x --timeout=240 \
  --junitxml="$OUT_DIR/tests.xml" 2>&1 | tail -25 | tee "$OUT_DIR/tests.txt"

timeout 300 $PY -m pytest benchmarks -q -p no:cacheprovider --benchmark-json="$OUT_DIR/bench.json" \
  --benchmark-columns=min,median,max,rounds 2>&1 | tail -5
cp benchmarks/table.md "$OUT_DIR/table.md" 2>/dev/null
cat "$OUT_DIR/table.md"

# DRAM bandwidth of the benchmarks that record the bytes they move (the pyramid round trip):
# GB/s and fraction of the card's peak (from torch.cuda.get_device_name), two byte counts:
# "passes" = every kernel pass reads its inputs once and writes its output once; "compulsory" =
# the least any implementation must move.
$PY - "$OUT_DIR/bench.json" <<'PYEOF' | tee "$OUT_DIR/bandwidth.md"
import json, sys

rows = ["| case | median (ms) | GB/s (passes) | of peak | GB/s (compulsory) | of peak |", "|---|---|---|---|---|---|"]
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    info = b.get("extra_info", {})
    if "gbps_passes" not in info:
        continue
    frac = lambda k: f"{info[k]:.0%}" if k in info else "peak unknown"
    rows.append(f"| {info.get('case', b['name'])} | {b['stats']['median'] * 1e3:.3f} | {info['gbps_passes']:.0f} | "
                f"{frac('dram_fraction_passes')} | {info['gbps_compulsory']:.0f} | {frac('dram_fraction_compulsory')} |")
print("\n".join(rows))
PYEOF

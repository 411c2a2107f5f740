#!/usr/bin/env bash
# fastpapers on a lent GPU machine, in one call that fits the device lease (< 10 min):
#   1. build the extension with the machine's own torch, CUDA kernels for sm_90   (<= 100 s)
#   2. the CUDA test cases                                                          (<= 90 s)
#   3. the benchmarks, rounds capped by time, table with ratios and chip limits    (<= 150 s)
#   4. the profile summary: wall vs GPU-kernel time per op, top kernels, syncs     (<= 75 s)
# Everything lands in OUT_DIR (at most 8 files come back from the device tool):
#   env.txt build.log tests.log bench.log bench.json table.md profile.txt
#
# Usage (repository root or anywhere): [FASTPAPERS_COMMIT=<hash>] bash benchmarks/gpu/run.sh [OUT_DIR]
#   OUT_DIR defaults to $OUT (the device tool's folder), else ./gpu_out. FASTPAPERS_COMMIT
#   labels the table where the tree travels without .git.
#
# The machine (device KINDS.md): python3 with torch 2.11 cu130, triton 3.6, torchvision 0.26,
# transformers, pytest-benchmark; no network, no kornia, no pycocoevalcap. Both travel in an
# ignored folder .whl of the checkout the device tool sends (the lead's), made once there:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl kornia==0.9.0 kornia_rs==0.2.0
#   mkdir -p .whl/site/pycocoevalcap && cp -r .venv/lib/python3*/site-packages/pycocoevalcap/{bleu,cider,rouge} \
#     .whl/site/pycocoevalcap/     # pure Python, 0.1 MB; the whole package is 101 MB of jars
# (7 MB in all), then: run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=600).
# Without them only the cases that need them skip (kornia peers, coco-caption oracles).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-${OUT:-gpu_out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
START=$SECONDS
stamp() { echo "[+$((SECONDS - START))s] $*"; }

WHEELS=${FASTPAPERS_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fp_site \
    "$WHEELS"/*.whl && export PYTHONPATH=/tmp/fp_site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d "$WHEELS/site" ] && export PYTHONPATH=$(cd "$WHEELS/site" && pwd)${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, triton, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'triton', triton.__version__, 'torchvision', torchvision.__version__)"
  $PY -c "import kornia; print('kornia', kornia.__version__)" 2>/dev/null || echo "kornia: not installed"
  $PY -c "import pycocoevalcap.cider.cider" 2>/dev/null && echo "pycocoevalcap: bleu/cider/rouge" \
    || echo "pycocoevalcap: not installed"
  echo "commit ${FASTPAPERS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
} 2>&1 | tee "$OUT_DIR/env.txt"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA device visible"; exit 1; }

# 1. Build (ninja, 16 jobs, Hopper only). The .so of another machine never travels (.gitignore).
stamp "build start"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} \
  timeout 150 $PY setup.py -q build_ext --inplace >"$OUT_DIR/build.log" 2>&1
BUILD_RC=$?
stamp "build end (rc $BUILD_RC)" | tee -a "$OUT_DIR/build.log"
tail -5 "$OUT_DIR/build.log"
$PY -c "import fastpapers, json; print(json.dumps(fastpapers.info()))" 2>&1 | tee -a "$OUT_DIR/env.txt"
[ "$BUILD_RC" -eq 0 ] || { echo "build failed: see build.log"; exit 1; }

# 2. CUDA test cases only (the CPU cases run in CI); SIGINT at the limit still prints pytest's summary.
stamp "tests start"
timeout -s INT -k 10 95 $PY -m pytest tests -q -p no:cacheprovider -k cuda --timeout=60 -rfE \
  >"$OUT_DIR/tests.log" 2>&1
stamp "tests end (rc $?)" | tee -a "$OUT_DIR/tests.log"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT_DIR/tests.log" | tail -30

# 3. Benchmarks: each case at most ~0.2 s of timed calls and at least 3 rounds (conftest.measure);
# the files most wanted first, so a run cut at the limit keeps them (table.md is rewritten
# after every case).
stamp "benchmarks start"
FASTPAPERS_BENCH_TABLE="$OUT_DIR/table.md" timeout -s INT -k 10 160 $PY -m pytest -q -p no:cacheprovider \
  benchmarks/test_bench_nms.py benchmarks/test_bench_roi.py benchmarks/test_bench_pyramid.py \
  benchmarks/test_bench_beam_search.py benchmarks/test_bench_densecap.py benchmarks/test_bench_gram.py \
  benchmarks/test_bench_metrics.py \
  --benchmark-max-time=0.2 --benchmark-min-rounds=3 --benchmark-json="$OUT_DIR/bench.json" \
  --benchmark-columns=min,median,max,rounds >"$OUT_DIR/bench.log" 2>&1
stamp "benchmarks end (rc $?)" | tee -a "$OUT_DIR/bench.log"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT_DIR/bench.log" | tail -20

# 4. Profile summary, printed last (the device tool returns the output's tail).
stamp "profile start"
timeout -s INT -k 10 75 $PY benchmarks/gpu/profile.py --device cuda --iters 20 --budget 0.2 \
  2>&1 | grep -v "^USDT:" >"$OUT_DIR/profile.txt"
stamp "profile end (rc $?)"
cat "$OUT_DIR/table.md" 2>/dev/null
sed -n '/^| case | wall/,$p' "$OUT_DIR/profile.txt"
stamp "done"

#!/usr/bin/env bash
# The GPU check, one script for a machine with an NVIDIA GPU and no internet (docs/gpu.md): builds
# recis-core with CUDA (pip, into a private target folder), runs every test marked `cuda` with
# RECIS_REQUIRE_CUDA=1 (a missing GPU or CUDA build fails them rather than skipping) and
# tools/bench/gpu.py, and writes logs and JSON to $OUT (default build/device). Needs python3 with
# torch, pytest, hypothesis, pyarrow, safetensors, xxhash, tqdm, numpy, matplotlib, nanobind,
# scikit-build-core, cmake, ninja and nvcc. About 6 minutes on one H200.
#
#   bash tools/device/check.sh             # on the GPU machine, from anywhere
#   bash tools/device/check.sh --dry-run   # here: the same steps on the CPU (.venv), benchmark --small
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/device}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BENCH=(--json "$OUT/gpu.json")
REQUIRE=1
if [[ ${1:-} == --dry-run ]]; then
  PY=${PYTHON:-.venv/bin/python}
  BENCH+=(--small --device cpu)
  REQUIRE=0
fi
SITE=$(mktemp -d)
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*"; }

step "environment -> $OUT/env.txt"
{
  nvidia-smi || echo "no nvidia-smi"
  "$PY" -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
  nvcc --version | tail -2
} > "$OUT/env.txt" 2>&1
tail -3 "$OUT/env.txt"

step "build recis-core with CUDA -> $OUT/build.log"
start=$SECONDS
if ! "$PY" -m pip install --no-build-isolation --no-deps --no-index --disable-pip-version-check -q --target "$SITE" \
    -Cbuild-dir=build/device-core -Ccmake.define.RECIS_WITH_CUDA=ON ./cpp > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "check: the CUDA build failed"
  exit 1
fi
echo "built in $((SECONDS - start)) s"
PYTHONPATH=$SITE
for p in packages/*/src; do PYTHONPATH=$PYTHONPATH:$PWD/$p; done
export PYTHONPATH
"$PY" -c "from recis.core import kernels; assert kernels.gpu is not None, 'recis-core has no CUDA kernels'; print('recis.core.kernels.gpu:', ', '.join(n for n in dir(kernels.gpu) if not n.startswith('_')))" || exit 1

step "pytest -m cuda -> $OUT/pytest.log"
RECIS_REQUIRE_CUDA=$REQUIRE "$PY" -m pytest -m cuda -q --junitxml="$OUT/pytest.xml" 2>&1 | tee "$OUT/pytest.log" | tail -25
tests=${PIPESTATUS[0]}

step "tools/bench/gpu.py -> $OUT/bench.log, $OUT/gpu.json"
"$PY" tools/bench/gpu.py "${BENCH[@]}" 2>&1 | tee "$OUT/bench.log" | grep -v "^time:\|^[0-9]*\.table\|^table\|^---" | tail -45
bench=${PIPESTATUS[0]}

rm -rf "$SITE"
step "done: tests exit $tests, benchmark exit $bench"
[[ $tests == 0 && $bench == 0 ]]

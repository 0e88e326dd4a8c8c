#!/usr/bin/env bash
# Builds the venv that the TorchRec side of tools/bench/sparse_step.py and sparse_step_dist.py runs
# in: TorchRec + FBGEMM (CPU) on torch 2.13.0, apart from .venv (TorchRec pins its own fbgemm).
#
#   tools/bench/torchrec/install.sh [VENV]    # default: $RECIS_TORCHREC_VENV or /tmp/torchrec-venv
#
# The one pairing that loads on the CPU build of torch 2.13.0 is fbgemm-gpu-cpu 1.8.0 + torchrec
# 1.8.0 (fbgemm-gpu-cpu 1.7.0 and 1.9.0 fail on undefined symbols). torchrec goes in with --no-deps:
# its metadata pulls the CUDA fbgemm-gpu, which would overwrite the CPU module; its run-time
# dependencies follow by name.
set -euo pipefail
VENV="${1:-${RECIS_TORCHREC_VENV:-/tmp/torchrec-venv}}"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 fbgemm-gpu-cpu==1.8.0
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps torchrec==1.8.0
"$VENV/bin/pip" install -q --disable-pip-version-check tensordict torchmetrics==1.0.3 tqdm pyre-extensions iopath
"$VENV/bin/python" -c "import fbgemm_gpu, torchrec; print('torchrec and fbgemm_gpu import')"
echo "TorchRec venv ready: $VENV"

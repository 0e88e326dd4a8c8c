#!/usr/bin/env bash
# `make cuda-check`: configures and builds the core with RECIS_WITH_CUDA=ON in build/cuda (every
# cpp/src/*/*.cu with nvcc warnings as errors, the CUDA bindings, the stubs, which import the
# module), without installing it. Needs nvcc, not a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/.venv/bin
command -v nvcc > /dev/null || { echo "cuda-check: nvcc not found (install the CUDA toolkit)"; exit 1; }
mkdir -p build
version=$("$bin/python" -c "import tomllib; print(tomllib.load(open('cpp/pyproject.toml', 'rb'))['project']['version'])")
PATH=$bin:$PATH cmake -S cpp -B build/cuda -G Ninja -DRECIS_WITH_CUDA=ON -DPython_EXECUTABLE="$bin/python" \
  -DSKBUILD_PROJECT_VERSION="$version" > build/cuda-configure.log
PATH=$bin:$PATH cmake --build build/cuda
echo "cuda-check: $(find cpp/src -name "*.cu" | wc -l) .cu files and the CUDA bindings compile cleanly"

#!/usr/bin/env bash
# The C++ half of `make lint`: clang-format's layout (120 columns) and clang-tidy's checks
# (.clang-format, .clang-tidy) over every file of cpp/. A CMake configure exports the compile
# commands clang-tidy needs; nothing is built. Both tools are PyPI wheels in .venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/.venv/bin
git ls-files -z 'cpp/*.cc' 'cpp/*.h' 'cpp/*.cu' 'cpp/*.cuh' | xargs -0 "$bin/clang-format" --dry-run --Werror
version=$("$bin/python" -c "import tomllib; print(tomllib.load(open('cpp/pyproject.toml', 'rb'))['project']['version'])")
PATH=$bin:$PATH cmake -S cpp -B build/tidy -G Ninja -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  -DPython_EXECUTABLE="$bin/python" -DSKBUILD_PROJECT_VERSION="$version" > /dev/null
# The vector clones (target_clones) are a GCC feature clang cannot parse on templates: checked without.
git ls-files -z 'cpp/src/*.cc' 'cpp/bindings/*.cc' |
  xargs -0 -n 1 -P 2 "$bin/clang-tidy" -p build/tidy --quiet --extra-arg=-DRECIS_NO_CLONES
echo "C++ lint: clang-format and clang-tidy clean"

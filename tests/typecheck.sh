#!/usr/bin/env bash
# mypy on accmon.probe and accmon.tui, from a checkout. The folders probe/ and tui/ are installed as
# accmon.probe and accmon.tui (pyproject's package-dir), a mapping mypy cannot follow through the editable
# install's import hook: so mypy reads a link tree accmon/{probe,tui} -> the checkout's folders.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$top/.venv/bin/python}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/accmon"
ln -s "$top/probe" "$tree/accmon/probe"
ln -s "$top/tui" "$tree/accmon/tui"
cd "$tree"
"$py" -m mypy --config-file "$top/pyproject.toml" --cache-dir "$top/.mypy_cache" -p accmon.probe -p accmon.tui "$@"

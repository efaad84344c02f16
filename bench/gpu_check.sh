#!/usr/bin/env bash
# The GPU claims, proven in one short call (issue 20): see bench/gpu_check.py for what is checked and how.
#
#   bash bench/gpu_check.sh --fetch-wheels    # once, on a machine with a package index (this dev machine):
#                                             #   pyzmq, msgspec and pytest wheels for CPython 3.12 into bench/wheels/
#   bash bench/gpu_check.sh [--quick|--full] [--models cnn,gpt] [--out DIR]
#   bash bench/gpu_check.sh --setup-only      # the set-up and its import checks, nothing run
#
# The same download by hand:
#   python3 -m pip download pyzmq msgspec pytest --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d bench/wheels
#
# On a bare GPU machine (Python 3.12, torch with CUDA, numpy; no pyzmq, no textual, no network) bench/wheels/
# must travel with the working tree: it is ignored by git, so name it in the device tool's `carry`
# (["bench/wheels"], ~3 MB), e.g.  run(command="bash bench/gpu_check.sh", carry=["bench/wheels"], timeout_s=480)
# ($OUT is set there; the script keeps itself within 7 minutes, --deadline). The script installs only what is missing into a scratch directory (never into the system),
# maps this checkout to the `accmon` package with a symlink tree there (pyproject maps probe/ -> accmon.probe,
# tui/ -> accmon.tui), checks that the probe and the headless commands import without textual, and runs
# bench/gpu_check.py. Output: $OUT (default ./gpu_check_out): summary.json, gpu_check.log, logs/, recordings.
# The summary is printed last; exit 1 when a claim fails, 2 when the set-up fails.
#
# PYTHON=... picks the interpreter (default: the first of python3, python, python3.12 that imports torch).
# Without a GPU it runs the quick CPU mode (~20-50 s) and reports every GPU claim as "skipped: no GPU".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
WHEELS="$HERE/wheels"
# The interpreter: $PYTHON, else the first of python3, python, python3.12 that has torch, else python3.
if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
else
    PY=python3
    for cand in python3 python python3.12; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" >/dev/null 2>&1; then PY="$cand"; break; fi
    done
fi

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download pyzmq msgspec pytest --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 -d "$WHEELS"
    ls -l "$WHEELS"
    exit 0
fi

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/accmon-gpucheck.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

# The checkout as the `accmon` namespace package (no folder moves, no install).
mkdir -p "$SCRATCH/src/accmon"
for part in probe tui demos; do
    ln -s "$REPO/$part" "$SCRATCH/src/accmon/$part"
done

# Install from bench/wheels what this interpreter lacks: into $SCRATCH/site (pip), or by unpacking the wheels
# when there is no pip. pytest goes to a folder of its own, on the path only for the CUDA test.
install_missing() {  # install_missing TARGET PACKAGE...
    local target="$1"; shift
    mkdir -p "$target"
    if [ ! -d "$WHEELS" ] || ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "gpu_check: $* missing and no wheels in $WHEELS (run: bash bench/gpu_check.sh --fetch-wheels)" >&2
        return 1
    fi
    if "$PY" -m pip --version >/dev/null 2>&1; then
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --target "$target" "$@" && return 0
        echo "gpu_check: pip install from $WHEELS failed; unpacking the wheels instead" >&2
    fi
    "$PY" - "$WHEELS" "$target" "$@" <<'EOF'
import glob, os, re, sys, zipfile
wheels, target, names = sys.argv[1], sys.argv[2], sys.argv[3:]
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
for name in names:
    norm = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in sorted(glob.glob(os.path.join(wheels, "*.whl")))
             if os.path.basename(w).lower().startswith(norm + "-") and ("-py3-" in w or f"-{tag}-" in w)]
    if not found:
        sys.exit(f"gpu_check: no wheel for {name} ({tag}) in {wheels}")
    zipfile.ZipFile(found[-1]).extractall(target)
    print(f"gpu_check: unpacked {os.path.basename(found[-1])}")
EOF
}

missing=()
"$PY" -c "import zmq" 2>/dev/null || missing+=(pyzmq)
"$PY" -c "import msgspec" 2>/dev/null || missing+=(msgspec)
if [ ${#missing[@]} -gt 0 ]; then
    echo "gpu_check: installing ${missing[*]} from $WHEELS into $SCRATCH/site" >&2
    install_missing "$SCRATCH/site" "${missing[@]}" || exit 2
fi
export PYTHONPATH="$SCRATCH/src:$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import pytest" 2>/dev/null; then
    echo "gpu_check: installing pytest from $WHEELS into $SCRATCH/pytest (for the CUDA test only)" >&2
    if install_missing "$SCRATCH/pytest" pytest pluggy iniconfig packaging pygments; then
        export GPU_CHECK_PYTEST_PATH="$SCRATCH/pytest"
        PYTHONPATH="$PYTHONPATH:$GPU_CHECK_PYTEST_PATH" "$PY" -m pytest --version >&2 \
            || { echo "gpu_check: the pytest from $WHEELS does not run: the CUDA test function will be called directly" >&2
                 unset GPU_CHECK_PYTEST_PATH; }
    else
        echo "gpu_check: no pytest: the CUDA test function will be called directly" >&2
    fi
fi

# The probe and the headless commands must import with no textual (a GPU node has none).
"$PY" -c "import sys; sys.modules['textual'] = None
import zmq, msgspec, numpy, accmon.probe, accmon.tui.runner, accmon.tui.headless, accmon.tui.check
print('gpu_check: python', sys.version.split()[0], '| pyzmq', zmq.__version__, '| accmon.probe from', accmon.probe.__path__[0], file=sys.stderr)" \
    || { echo "gpu_check: the set-up failed: accmon's probe or headless commands do not import (see above)" >&2; exit 2; }

if [ "${1:-}" = "--setup-only" ]; then
    echo "gpu_check: set-up OK (--setup-only: nothing run)" >&2
    exit 0
fi

cd "$REPO"
rc=0
"$PY" "$HERE/gpu_check.py" "$@" || rc=$?
exit "$rc"

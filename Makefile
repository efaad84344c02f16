# Two commands on a fresh clone: `make demo` and `make test`. Each builds .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch==2.13.0 is a CPU build; an unpinned torch would pull a multi-GB CUDA build. The framework integrations
# are pinned with it, in one pip command, so that none of them can move torch. pip compiles what it installs
# file by file on one core; compileall -j 0 does the same work on every core (66 -> 48 s here). It skips the
# packages' own tests and transformers' ~2,500 model files but BERT's (the tests' model) and auto's: 28 -> 18 s
# here; what is imported after all is compiled on first import. Its exit code is ignored as pip ignores it: a few
# files in torch's own test helpers are Python 3.12 source.
DEV_PACKAGES := torch==2.13.0 keras==3.15.1 lightning==2.6.6 transformers==5.23.0 accelerate==1.15.0 tensorboard==2.21.0 \
	jupyter_client==8.10.0 ipykernel==7.4.0 pyarrow==26.0.1

.PHONY: demo test lint venv bench snapshots-update clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(DEV_PACKAGES) -e '.[dev]'
	$(PY) -m compileall -qq -j 0 -x '/tests/|/transformers/models/(?!bert/|auto/)' $(VENV)/lib >/dev/null || true
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/accmon demo

# The static checks first (seconds), then the suite. pytest-timeout (pyproject) ends any test that hangs.
# Two workers, each taking whole test files (module fixtures are built once): most of a test's time is a
# child process starting torch, and the two cores share that work (8.5 min in one process, about 6 in two).
test: $(STAMP) lint
	bash tests/setup_system.sh
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	bash tests/typecheck.sh

bench: $(STAMP)
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

snapshots-update: $(STAMP)
	$(PY) -m pytest tests/tui -k snapshot --snapshot-update

clean:
	rm -rf $(VENV) .pytest_cache

# Two commands do all set-up on a fresh clone: `make run` (the dashboard) and `make test`.
# Both create .venv and install requirements.txt when it is missing or has changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-16)

.PHONY: run test test-fast lint bench bench-gpu setup
setup: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# serve.py = streamlit run app.py, its heavy imports begun while the server starts (ui/preload.py)
run: $(STAMP)
	$(PY) serve.py

# Two workers (this machine and CI have two cores); a module's tests stay on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The fast tier: everything but the end-to-end cases marked slow or browser (a few minutes).
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow and not browser"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) bench/merge_bandwidth.py

# Every GPU figure in one process (docs/gpu.md). No .venv: on a lent GPU machine python3 is the one with torch.
GPU_PYTHON ?= python3
bench-gpu:
	$(GPU_PYTHON) bench/gpu.py $(GPU_ARGS)

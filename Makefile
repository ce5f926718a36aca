# ag_torchfix: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test demo bench sweep clean

# The pinned dev stack (requirements/current.txt) plus the package itself, editable.
$(STAMP): requirements/current.txt pyproject.toml hatch_build.py plugin/ag_torchfix.pth plugin/_ag_torchfix_autoload.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/current.txt "pytest>=7"
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) demo/demo.py

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# Regenerate the allowlist candidates from real exports (review them before editing allowlist.py).
sweep: $(STAMP)
	$(PY) tools/sweep_exports.py .cache/sweep-current.json

clean:
	rm -rf $(VENV) .envs .cache

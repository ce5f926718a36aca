# ag_torchfix: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Legacy-stack environments and trained test predictors are cached outside the checkout, so that
# CI (a clean clone every run) reuses them on the same machine; both are rebuilt when missing or stale.
CACHE  ?= $(HOME)/.cache/ag-torchfix
export AG_TORCHFIX_ENVS ?= $(CACHE)/envs
export AG_TORCHFIX_TEST_CACHE ?= $(CACHE)/predictors
LEGACY := legacy-ag11 legacy-fastai27

.PHONY: venv envs test test-current test-forced test-legacy compat-check compat demo bench sweep clean

# The current stack (requirements/current.txt) plus the package itself, editable.
$(STAMP): requirements/current.txt pyproject.toml hatch_build.py plugin/ag_torchfix.pth plugin/_ag_torchfix_autoload.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/current.txt "pytest>=7"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

venv: $(STAMP)

envs:
	@for env in $(LEGACY); do tools/env.sh $$env; done

# The test matrix: the current stack, the current stack with torch forcing weights-only loads, the two
# legacy stacks, and the README's compatibility table measured against all three.
test: test-current test-forced test-legacy compat-check

test-current: $(STAMP)
	$(PY) -m pytest -q tests

test-forced: $(STAMP)
	TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 $(PY) -m pytest -q tests

test-legacy: envs
	@for env in $(LEGACY); do echo "== $$env"; $(AG_TORCHFIX_ENVS)/$$env/bin/python -m pytest -q tests || exit 1; done

compat-check: $(STAMP) envs
	$(PY) tools/compat.py --check README.md $(PY) $(foreach env,$(LEGACY),$(AG_TORCHFIX_ENVS)/$(env)/bin/python)

# Re-measure the compatibility table and write it into the README.
compat: $(STAMP) envs
	$(PY) tools/compat.py --write README.md $(PY) $(foreach env,$(LEGACY),$(AG_TORCHFIX_ENVS)/$(env)/bin/python)

demo: $(STAMP)
	$(PY) demo/demo.py

bench: $(STAMP)
	$(PY) benchmarks/bench.py

# Regenerate the allowlist candidates from real predictors (review them before editing allowlist.py).
sweep: $(STAMP)
	$(PY) tools/sweep_exports.py .cache/sweep-fastai-internals.json
	$(PY) tools/sweep_strict.py .cache/sweep-strict.json

clean:
	rm -rf $(VENV) .cache

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
# The wide compatibility matrix (tools/env.sh): AutoGluon 1.2/1.3/1.4, fastai 2.7.19/2.8.12 forced over
# AutoGluon 1.6.3, torch 2.14.1 (several GB of CUDA libraries), and the current stack on Python 3.10, 3.12 and 3.13
# as readers (CUDA torch builds). Built and measured only by `make compat-wide`.
WIDE   := ag12 ag13 ag14 fastai2719 fastai2812 torch2141 py310 py312 py313

.PHONY: venv envs test test-current test-forced test-legacy compat-check compat demo bench sweep stack-tables clean

# The current stack (requirements/current.txt) plus the package itself, editable.
# A build from scratch records its duration in .build-seconds (tools/compat.py reports it); an update does not.
$(STAMP): requirements/current.txt pyproject.toml hatch_build.py plugin/ag_torchfix.pth plugin/_ag_torchfix_autoload.py
	@start=$$(date +%s); if [ -d $(VENV) ]; then rm -f $(VENV)/.build-seconds; new=0; else new=1; fi; set -ex; \
	$(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip; \
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/current.txt "pytest>=7"; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .; \
	if [ $$new = 1 ]; then echo $$(( $$(date +%s) - start )) > $(VENV)/.build-seconds; fi
	touch $@

venv: $(STAMP)

envs:
	@for env in $(LEGACY); do tools/env.sh $$env; done

# The test matrix: the current stack, the current stack with torch forcing weights-only loads, the two
# legacy stacks, and the compatibility table (docs/compatibility.md) measured against all three.
test: test-current test-forced test-legacy compat-check

test-current: $(STAMP)
	$(PY) -m pytest -q tests

# The other rows skip the modules that depend on neither the force flag nor the stack (tests/conftest.py RUN_ONCE).
test-forced: $(STAMP)
	TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 AG_TORCHFIX_TEST_ONCE=0 $(PY) -m pytest -q tests

test-legacy: envs
	@for env in $(LEGACY); do echo "== $$env"; AG_TORCHFIX_TEST_ONCE=0 $(AG_TORCHFIX_ENVS)/$$env/bin/python -m pytest -q tests || exit 1; done

compat-check: $(STAMP) envs
	$(PY) tools/compat.py --check docs/compatibility.md $(PY) $(foreach env,$(LEGACY),$(AG_TORCHFIX_ENVS)/$(env)/bin/python)

# Re-measure the compatibility table and write it into docs/compatibility.md.
compat: $(STAMP) envs
	$(PY) tools/compat.py --write docs/compatibility.md $(PY) $(foreach env,$(LEGACY),$(AG_TORCHFIX_ENVS)/$(env)/bin/python)

.PHONY: envs-wide compat-wide

# Build (or reuse) every environment of the wide matrix; each build records its duration in NAME/.build-seconds.
envs-wide:
	@for env in $(WIDE); do tools/env.sh $$env || exit 1; done

# Measure every stack (the CI stacks and the wide ones) and rewrite the whole table (docs/compatibility.md) and its closing note
# (date, versions, build times); the measured steps' details go to .cache/compat-wide.json.
compat-wide: $(STAMP) envs envs-wide
	@mkdir -p .cache
	$(PY) tools/compat.py --write docs/compatibility.md --all --json .cache/compat-wide.json \
	  $(PY) $(foreach env,$(LEGACY) $(WIDE),$(AG_TORCHFIX_ENVS)/$(env)/bin/python)

demo: $(STAMP)
	$(PY) demo/demo.py

# picklescan is installed for the side-by-side scan row only (a benchmark dependency, not the package's).
bench: $(STAMP)
	@$(PY) -c "import picklescan" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check picklescan
	$(PY) benchmarks/bench.py

# Measure the stack tables the scanner uses instead of importing fastai and torch (policy/stack_tables.json), in the
# project's environment and every cached one (CI stacks, wide matrix, goldens writers); review the diff.
stack-tables: $(STAMP)
	AG_TORCHFIX_AUTOLOAD=0 $(PY) tools/sweep_stack_tables.py
	@for py in $(AG_TORCHFIX_ENVS)/*/bin/python; do AG_TORCHFIX_AUTOLOAD=0 PYTHONPATH=$(CURDIR) $$py tools/sweep_stack_tables.py || exit 1; done

# Regenerate the allowlist candidates from real predictors (review them before editing allowlist.py).
sweep: $(STAMP)
	$(PY) tools/sweep_exports.py .cache/sweep-fastai-internals.json
	$(PY) tools/sweep_strict.py .cache/sweep-strict.json
	$(PY) tools/sweep_schema.py .cache/sweep-schema.json tests/goldens $(AG_TORCHFIX_TEST_CACHE)

.PHONY: fuzz

# Coverage-guided fuzzing (atheris) of the archive reader, the opcode scanner, the internals check, the secure
# loader, strict mode and the scanner: FUZZ_SECONDS each, one target at a time, niced; not part of `make test`.
# Seeds come from FUZZ_PREDICTOR (predictor directories) or the test suite's cached predictors; findings and
# the growing corpus stay under .cache/fuzz/ (tools/fuzz.py says how to read them).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= archive scan internals loader strict scanner materialize
FUZZ_PREDICTOR ?=
fuzz: $(STAMP)
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check atheris
	@status=0; for target in $(FUZZ_TARGETS); do \
	  nice -n 10 $(PY) tools/fuzz.py $$target --seconds $(FUZZ_SECONDS) \
	    $(foreach dir,$(FUZZ_PREDICTOR),--predictor $(dir)) || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) .cache

.PHONY: goldens

# Golden predictors written by other stacks (Python patch releases, numpy, pandas, torch, fastai, AutoGluon),
# committed under tests/goldens/: each writer's environment is built (or reused) by tools/goldens/build.sh, which
# refuses to run in CI. Rebuild one writer with `make goldens GOLDEN_WRITERS=py3.13.0`. The GPU-written golden
# (py3.12.3-torch2.11-cu130) is imported once by tools/goldens/import_gpu.py, not rebuilt here.
GOLDEN_WRITERS ?= py3.11.2-debian py3.13.0 py3.10.13 py3.12.1 py3.11.7 numpy1.26 pandas2.0 pandas2.1 pandas2.2 \
  pandas2.3 torch2.6 torch2.14 fastai2.7.18 fastai2.7.19 fastai2.8.12 ag1.1 ag1.2 ag1.3 ag1.4 ag1.5 \
  py3.11.7-zoo py3.11.2-debian-zoo numpy1.26-zoo pandas2.0-zoo py3.13.0-zoo py3.10.13-zoo py3.12.1-zoo
goldens:
	@for writer in $(GOLDEN_WRITERS); do tools/goldens/build.sh $$writer || exit 1; done

.PHONY: ag-suite

# AutoGluon's own tabular unit tests with strict mode on in every process (tools/ag_suite.py), then the failures
# again with strict mode off (--baseline) to tell strict mode's failures apart; not part of `make test`. The tests
# are not on PyPI: give a checkout of github.com/autogluon/autogluon at the installed version's tag, e.g.
# `git clone --depth 1 --branch v1.6.3 https://github.com/autogluon/autogluon /tmp/autogluon` and
# `make ag-suite AG_SUITE_CHECKOUT=/tmp/autogluon`. AG_SUITE_SUBSET: quick (159 tests, 5-14 min here), models, all.
AG_SUITE_CHECKOUT ?=
AG_SUITE_SUBSET ?= quick
ag-suite: $(STAMP)
	@mkdir -p .cache
	$(PY) tools/ag_suite.py --checkout "$(AG_SUITE_CHECKOUT)" --subset $(AG_SUITE_SUBSET) --baseline --json .cache/ag-suite.json

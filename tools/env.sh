#!/usr/bin/env bash
# tools/env.sh NAME: create (or reuse) the virtual environment $AG_TORCHFIX_ENVS/NAME (default .envs/NAME)
# for a stack of the test matrix (the current stack is .venv, built by the Makefile).
# The two legacy stacks of `make test` (CI):
#   legacy-ag11      stack A: AutoGluon 1.1.1 + fastai 2.7.18 (numpy 1.26), torch 2.13.0
#   legacy-fastai27  stack B: AutoGluon 1.6.3 + fastai 2.7.18 forced over it, torch 2.13.0, Ray (parallel folds)
# The wide stacks of `make compat-wide` (never built by `make test` / `make envs`), all torch 2.13.0 unless stated:
#   ag12        AutoGluon 1.2 + fastai 2.7.19 (its newest allowed fastai, forced past its torch<2.7 pin), setuptools<81
#   ag13        AutoGluon 1.3.1 + fastai 2.8.12 (as pip resolves it today), setuptools<81
#   ag14        AutoGluon 1.4.0 + fastai 2.8.12 (as pip resolves it today, numpy 2.3)
#   fastai2719  AutoGluon 1.6.3 + fastai 2.7.19 forced over it (fastcore 1.7, fastprogress 1.0.5)
#   fastai2812  AutoGluon 1.6.3 + fastai 2.8.12 forced over it (fastcore 2.x, past AutoGluon's fastcore<2 pin)
#   torch2141   AutoGluon 1.6.3 + torch 2.14.1 forced over it (past its torch<2.14 pin; a CUDA build with its
#               CUDA libraries, several GB: built only on request, never in CI)
#   py310       the current stack (torch 2.13.0, requirements/current.txt) on pyenv's Python 3.10.13
#   py312       the current stack on pyenv's Python 3.12.1
#   py313       the current stack on pyenv's Python 3.13.0
#               (readers on other Pythons than 3.11: torch 2.13.0 comes from the registry as a CUDA build, about
#               3.5 GB a venv: built only on request, never in CI)
# Each stack's interpreter is python_for NAME: $PYTHON (default python3) except the py3NN stacks, which use
# $PYENV_ROOT/versions/X.Y.Z/bin/python3 (PYENV_ROOT defaults to ~/.pyenv).
# AutoGluon 1.2 and 1.3 use pkg_resources (fastai's version check, the predictor's load): without it (setuptools
# >= 82; 81 still ships it, deprecated) NeuralNetFastAI is skipped at fit with an ImportError and
# TabularPredictor.load fails, hence setuptools<81 in their recipes (as for AutoGluon 1.1).
# An environment is rebuilt when missing, broken, or when its recipe below changed (a stamp holds the
# recipe's hash); a build writes its duration in seconds to NAME/.build-seconds (tools/compat.py reports it).
# The package itself is always (re)installed editable, without dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: tools/env.sh legacy-ag11|legacy-fastai27|ag12|ag13|ag14|fastai2719|fastai2812|torch2141|py310|py312|py313}
PYTHON=${PYTHON:-python3}
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}

# The interpreter a stack's venv is created with.
python_for() {
  case "$1" in
    py310) echo "$PYENV_ROOT/versions/3.10.13/bin/python3" ;;
    py312) echo "$PYENV_ROOT/versions/3.12.1/bin/python3" ;;
    py313) echo "$PYENV_ROOT/versions/3.13.0/bin/python3" ;;
    *) echo "$PYTHON" ;;
  esac
}

recipe() {
  case "$1" in
    legacy-ag11)
      echo 'torch==2.13.0 autogluon.tabular==1.1.1 setuptools<81 pyyaml matplotlib requests pillow pytest'
      echo '--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3 fastdownload==0.0.7'
      echo 'spacy==3.7.5' ;;
    legacy-fastai27)
      echo 'torch==2.13.0 -r requirements/current.txt autogluon.core[ray]==1.6.3 pytest'
      echo '--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3' ;;
    ag12)
      echo 'torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.2 setuptools<81 spacy<3.8 pyyaml matplotlib requests pillow scipy packaging pytest'
      echo '--no-deps fastai==2.7.19 fastcore==1.7.29 fastprogress==1.0.5 fastdownload==0.0.7' ;;
    ag13)
      echo 'torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.3.1 fastai==2.8.12 setuptools<81 spacy<3.9 pytest' ;;
    ag14)
      echo 'torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.4.0 fastai==2.8.12 spacy<3.9 pytest' ;;
    fastai2719)
      echo 'torch==2.13.0 -r requirements/current.txt pytest'
      echo '--no-deps fastai==2.7.19 fastcore==1.7.29 fastprogress==1.0.5' ;;
    fastai2812)
      echo 'torch==2.13.0 -r requirements/current.txt pytest'
      echo '--no-deps fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 plum-dispatch==2.9.0' ;;
    torch2141)
      echo 'torch==2.13.0 -r requirements/current.txt pytest'
      echo 'torch==2.14.1 torchvision==0.29.1' ;;
    py310|py312|py313)
      echo 'torch==2.13.0 -r requirements/current.txt pytest' ;;
    *) echo "unknown environment: $1" >&2; return 2 ;;
  esac
}

# pip warns about this machine's missing local index directories: keep the log readable
pip_install() { "$py" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }

steps=$(recipe "$name")
interpreter=$(python_for "$name")
command -v "$interpreter" >/dev/null || { echo "env $name: no interpreter $interpreter (pyenv install it)" >&2; exit 2; }
# A stack with its own interpreter also hashes that interpreter's version (the other stacks' hashes, from the
# recipe and requirements/current.txt alone, are unchanged, so their environments are not rebuilt).
hash=$( { echo "$steps"; cat requirements/current.txt
          if [ "$interpreter" != "$PYTHON" ]; then "$interpreter" -V; fi; } | sha256sum | cut -c1-16)
env=${AG_TORCHFIX_ENVS:-.envs}/$name
py=$env/bin/python
if [ -f "$env/.stamp" ] && [ "$(cat "$env/.stamp")" = "$hash" ] && "$py" -c "import torch, fastai, autogluon.tabular" 2>/dev/null; then
  echo "env $name: reusing $env"
else
  if [[ $name = torch2141 || $name = py3* ]] && [ "${CI:-}" = true ]; then
    echo "env $name: not built in CI (several GB of CUDA libraries); build it with \`make envs-wide\` outside CI" >&2
    exit 3
  fi
  start=$(date +%s)
  rm -rf "$env"
  "$interpreter" -m venv "$env"
  pip_install --upgrade pip
  while IFS= read -r line; do
    # shellcheck disable=SC2086  # each recipe line is a list of pip arguments
    pip_install $line
  done <<< "$steps"
  echo "$hash" > "$env/.stamp"
  echo "$(( $(date +%s) - start ))" > "$env/.build-seconds"
  echo "env $name: built in $(( $(date +%s) - start ))s"
fi
pip_install --no-deps -e .

#!/usr/bin/env bash
# tools/env.sh NAME: create (or reuse) the virtual environment $AG_TORCHFIX_ENVS/NAME (default .envs/NAME)
# for a legacy stack of the test matrix
# (the current stack is .venv, built by the Makefile).
#   legacy-ag11      stack A: AutoGluon 1.1.1 + fastai 2.7.18 (numpy 1.26), torch 2.13.0
#   legacy-fastai27  stack B: AutoGluon 1.6.3 + fastai 2.7.18 forced over it, torch 2.13.0, Ray (parallel folds)
# An environment is rebuilt when missing, broken, or when its recipe below changed (a stamp holds the
# recipe's hash). The package itself is always (re)installed editable, without dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: tools/env.sh legacy-ag11|legacy-fastai27}
PYTHON=${PYTHON:-python3}

recipe() {
  case "$1" in
    legacy-ag11)
      echo 'torch==2.13.0 autogluon.tabular==1.1.1 setuptools<81 pyyaml matplotlib requests pillow pytest'
      echo '--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3 fastdownload==0.0.7'
      echo 'spacy==3.7.5' ;;
    legacy-fastai27)
      echo 'torch==2.13.0 -r requirements/current.txt autogluon.core[ray]==1.6.3 pytest'
      echo '--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3' ;;
    *) echo "unknown environment: $1" >&2; return 2 ;;
  esac
}

# pip warns about this machine's missing local index directories: keep the log readable
pip_install() { "$py" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }

steps=$(recipe "$name")
hash=$( { echo "$steps"; cat requirements/current.txt; } | sha256sum | cut -c1-16)
env=${AG_TORCHFIX_ENVS:-.envs}/$name
py=$env/bin/python
if [ -f "$env/.stamp" ] && [ "$(cat "$env/.stamp")" = "$hash" ] && "$py" -c "import torch, fastai, autogluon.tabular" 2>/dev/null; then
  echo "env $name: reusing $env"
else
  start=$(date +%s)
  rm -rf "$env"
  "$PYTHON" -m venv "$env"
  pip_install --upgrade pip
  while IFS= read -r line; do
    # shellcheck disable=SC2086  # each recipe line is a list of pip arguments
    pip_install $line
  done <<< "$steps"
  echo "$hash" > "$env/.stamp"
  echo "env $name: built in $(( $(date +%s) - start ))s"
fi
pip_install --no-deps -e .

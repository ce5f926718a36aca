#!/usr/bin/env bash
# tools/goldens/build.sh WRITER_ID: create (or reuse) the writer environment
# ${AG_TORCHFIX_ENVS:-$HOME/.cache/ag-torchfix/envs}/golden-WRITER_ID and write the golden predictor
# tests/goldens/WRITER_ID/ with tools/goldens/write_golden.py (`make goldens` runs it for every writer).
# Goldens are genuine files of other stacks, committed to the repository: they are built by hand, outside CI
# (several writers download multi-GB CUDA builds of torch), and never by `make test`.
# Writers (each recipe: its Python, then pip argument lines run in order; a `--no-deps` line forces a release
# past AutoGluon's pins), torch 2.13.0 and AutoGluon 1.6.3 unless stated:
#   py3.11.2-debian  Debian's system Python 3.11.2 (enum members pickle by name)
#   py3.13.0         pyenv 3.13.0 (pathlib pickles as pathlib._local.PosixPath; torch is a CUDA build)
#   py3.10.13        pyenv 3.10.13 (torch is a CUDA build)
#   py3.12.1         pyenv 3.12.1 (torch is a CUDA build)
#   py3.11.7         pyenv 3.11.7, the current stack (requirements/current.txt's autogluon.tabular[fastai])
#   numpy1.26        numpy 1.26.4 (AutoGluon 1.6.3 allows numpy>=1.25)
#   pandas2.0        pandas 2.0.3 with numpy 1.26.4 (pandas 2.0 wheels are built against numpy 1); the writer
#                    registers pandas' option future.no_silent_downcasting (new in pandas 2.2), which AutoGluon
#                    1.6.3's fit sets unguarded (OptionError otherwise): writer.json "writer_shims"
#   pandas2.1        pandas 2.1.4 with numpy 1.26.4, the same shim
#   pandas2.2        pandas 2.2.3
#   pandas2.3        pandas 2.3.3
#   torch2.6         torch 2.6.0 + torchvision 0.21.0 (a CUDA build) forced past AutoGluon 1.6.3's torch>=2.10 pin
#   torch2.14        torch 2.14.1 + torchvision 0.29.1 forced past AutoGluon 1.6.3's torch<2.14 pin
#   fastai2.7.18     fastai 2.7.18 forced over AutoGluon 1.6.3 (fastcore 1.7.29, fastprogress 1.0.3)
#   fastai2.7.19     fastai 2.7.19 forced over AutoGluon 1.6.3 (fastcore 1.7.29, fastprogress 1.0.5)
#   fastai2.8.12     fastai 2.8.12 forced over AutoGluon 1.6.3 (fastcore 2.x, fasttransform, past fastcore<2)
#   ag1.1            AutoGluon 1.1.1 + fastai 2.7.18 (tools/env.sh legacy-ag11): trains NeuralNetFastAI on
#                    torch >= 2.6 only with ag_torchfix installed, so it is (writer.json trained_with_ag_torchfix)
#   ag1.2            AutoGluon 1.2 + fastai 2.7.19 (tools/env.sh ag12)
#   ag1.3            AutoGluon 1.3.1 + fastai 2.8.12 (tools/env.sh ag13)
#   ag1.4            AutoGluon 1.4.0 + fastai 2.8.12 (tools/env.sh ag14)
#   ag1.5            AutoGluon 1.5.0 + fastai 2.8.12 (without its [fastai] extra, which pins torch<2.10)
# (The GPU-written golden py3.12.3-torch2.11-cu130 is imported by tools/goldens/import_gpu.py, not built here.)
# Zoo goldens, WRITER_ID-zoo for the writers py3.11.2-debian py3.13.0 py3.10.13 py3.12.1 py3.11.7 numpy1.26 pandas2.0:
# write_golden.py --zoo (every CPU model family of AutoGluon 1.6) in the writer's own venv golden-WRITER_ID, into
# which the model libraries of AutoGluon 1.6.3's [all] extra (ZOO_PKGS) are installed with the venv's own pip, the
# venv's other packages held at their versions (a constraints file from its pip freeze). py3.13.0/py3.10.13/py3.12.1:
# when golden-WRITER_ID is missing or stale (its CUDA torch is several GB), the test-matrix venv of the same stack
# (tools/env.sh py313/py310/py312: torch 2.13.0 + requirements/current.txt, the full zoo) writes it instead; it has
# ag_torchfix installed editable, so the writer blocks its import (GOLDEN_BLOCK_AG_TORCHFIX=1). writer.json "env"
# records which venv wrote it.
# An environment is rebuilt when missing, broken, or when its recipe changed (NAME/.stamp holds the recipe's hash);
# a build writes its duration in seconds to NAME/.build-seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
id=${1:?usage: tools/goldens/build.sh WRITER_ID (see the list at the top of this file)}
if [ "${CI:-}" = true ]; then
  echo "goldens: not built in CI (goldens are built by hand outside CI and committed; CUDA builds of torch are several GB)" >&2
  exit 3
fi

PYENV=${PYENV_ROOT:-/root/.pyenv}/versions
AG='autogluon.tabular[fastai]==1.6.3'
# the model libraries AutoGluon 1.6.3's [all] extra asks for on Linux (autogluon.tabular METADATA)
ZOO_PKGS='lightgbm>=4.0,<4.8 catboost>=1.2,<1.3 xgboost-cpu>=2.1.1,<3.4'
with_pkg=0
zoo=0
case "$id" in
  *-zoo)
    zoo=1; id=${id%-zoo}
    case "$id" in
      py3.11.2-debian|py3.13.0|py3.10.13|py3.12.1|py3.11.7|numpy1.26|pandas2.0) ;;
      *) echo "no zoo golden for writer $id (zoo writers: py3.11.2-debian py3.13.0 py3.10.13 py3.12.1 py3.11.7" \
              "numpy1.26 pandas2.0)" >&2; exit 2 ;;
    esac ;;
esac
recipe() {
  case "$1" in
    # Debian's system Python 3.11.2
    py3.11.2-debian)
      echo "python /usr/bin/python3.11"
      echo "torch==2.13.0"
      echo "$AG" ;;
    # pyenv Python 3.13.0 (a CUDA build of torch from the registry)
    py3.13.0)
      echo "python $PYENV/3.13.0/bin/python3"
      echo "torch==2.13.0"
      echo "$AG" ;;
    # pyenv Python 3.10.13 (a CUDA build of torch from the registry)
    py3.10.13)
      echo "python $PYENV/3.10.13/bin/python3"
      echo "torch==2.13.0"
      echo "$AG" ;;
    # pyenv Python 3.12.1 (a CUDA build of torch from the registry)
    py3.12.1)
      echo "python $PYENV/3.12.1/bin/python3"
      echo "torch==2.13.0"
      echo "$AG" ;;
    # the current stack: pyenv 3.11.7, torch 2.13.0 (CPU build on disk), AutoGluon 1.6.3 with its fastai
    py3.11.7)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG" ;;
    # numpy 1.26.4 under AutoGluon 1.6.3 (allowed: numpy>=1.25,<2.6)
    numpy1.26)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG numpy==1.26.4" ;;
    # pandas 2.0's last release (AutoGluon 1.6.3 allows pandas>=2.0,<2.4); its wheels need numpy 1. AutoGluon 1.6.3
    # cannot fit on pandas < 2.2 as released (see GOLDEN_PANDAS_OPTION_SHIM below)
    pandas2.0)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG pandas==2.0.3 numpy==1.26.4" ;;
    # pandas 2.1's last release; its wheels need numpy 1 (and the same shim)
    pandas2.1)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG pandas==2.1.4 numpy==1.26.4" ;;
    # pandas 2.2's last release
    pandas2.2)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG pandas==2.2.3" ;;
    # pandas 2.3's last release
    pandas2.3)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG pandas==2.3.3" ;;
    # torch 2.6.0 (first release defaulting to weights_only=True; a CUDA build) forced past torch>=2.10
    torch2.6)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG"
      echo "torch==2.6.0 torchvision==0.21.0" ;;
    # torch 2.14.1 forced past AutoGluon 1.6.3's torch<2.14
    torch2.14)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG"
      echo "torch==2.14.1 torchvision==0.29.1" ;;
    # fastai 2.7.18 forced over AutoGluon 1.6.3
    fastai2.7.18)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG"
      echo "--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3" ;;
    # fastai 2.7.19 forced over AutoGluon 1.6.3
    fastai2.7.19)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG"
      echo "--no-deps fastai==2.7.19 fastcore==1.7.29 fastprogress==1.0.5" ;;
    # fastai 2.8.12 forced over AutoGluon 1.6.3 (fastcore 2.x, past AutoGluon's fastcore<2)
    fastai2.8.12)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "$AG"
      echo "--no-deps fastai==2.8.12 fastcore==2.2.41 fasttransform==0.0.5 plum-dispatch==2.9.0" ;;
    # AutoGluon 1.1.1 + fastai 2.7.18 (tools/env.sh legacy-ag11); needs ag_torchfix to train on torch >= 2.6
    ag1.1)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "torch==2.13.0 autogluon.tabular==1.1.1 setuptools<81 pyyaml matplotlib requests pillow"
      echo "--no-deps fastai==2.7.18 fastcore==1.7.29 fastprogress==1.0.3 fastdownload==0.0.7"
      echo "spacy==3.7.5" ;;
    # AutoGluon 1.2 + fastai 2.7.19 (tools/env.sh ag12)
    ag1.2)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.2 setuptools<81 spacy<3.8 pyyaml matplotlib requests pillow scipy packaging"
      echo "--no-deps fastai==2.7.19 fastcore==1.7.29 fastprogress==1.0.5 fastdownload==0.0.7" ;;
    # AutoGluon 1.3.1 + fastai 2.8.12 (tools/env.sh ag13)
    ag1.3)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.3.1 fastai==2.8.12 setuptools<81 spacy<3.9" ;;
    # AutoGluon 1.4.0 + fastai 2.8.12 (tools/env.sh ag14)
    ag1.4)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.4.0 fastai==2.8.12 spacy<3.9" ;;
    # AutoGluon 1.5.0 + fastai 2.8.12 (its [fastai] extra pins torch<2.10: installed without the extra, like ag1.4)
    ag1.5)
      echo "python $PYENV/3.11.7/bin/python3"
      echo "torch==2.13.0"
      echo "torch==2.13.0 torchvision==0.28.0 autogluon.tabular==1.5.0 fastai==2.8.12 spacy<3.9" ;;
    *) echo "unknown writer: $1" >&2; return 2 ;;
  esac
}
# writers that cannot train NeuralNetFastAI without the package (fastai 2.7.18's load_model on torch >= 2.6)
case "$id" in ag1.1) with_pkg=1 ;; esac
# writers whose AutoGluon cannot fit on their pandas as released: AutoGluon 1.6.3's label check sets the option
# future.no_silent_downcasting (pandas >= 2.2) unguarded; write_golden.py registers it (a no-op on pandas < 2.2)
case "$id" in pandas2.0|pandas2.1) export GOLDEN_PANDAS_OPTION_SHIM=1 ;; *) unset GOLDEN_PANDAS_OPTION_SHIM ;; esac

pip_install() { nice -n 10 "$py" -m pip install -q --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file://" >&2); }

steps=$(recipe "$id")
python=$(sed -n '1s/^python //p' <<< "$steps")
pip_steps=$(sed 1d <<< "$steps")
hash=$( { echo "$steps"; echo "with_pkg=$with_pkg"; } | sha256sum | cut -c1-16)
envs=${AG_TORCHFIX_ENVS:-$HOME/.cache/ag-torchfix/envs}
env=$envs/golden-$id
py=$env/bin/python
export AG_TORCHFIX_AUTOLOAD=0
unset GOLDEN_BLOCK_AG_TORCHFIX
# a zoo golden of another Python may be written by the test-matrix venv of the same stack (see the top of this file)
case "$id" in py3.13.0) matrix_env=py313 ;; py3.10.13) matrix_env=py310 ;; py3.12.1) matrix_env=py312 ;; *) matrix_env= ;; esac
if [ -f "$env/.stamp" ] && [ "$(cat "$env/.stamp")" = "$hash" ] && "$py" -I -c "import torch, fastai, autogluon.tabular" 2>/dev/null; then
  echo "golden $id: reusing $env"
elif [ "$zoo" = 1 ] && [ -n "$matrix_env" ] \
     && "$envs/$matrix_env/bin/python" -I -c "import torch, fastai, autogluon.tabular, lightgbm, catboost, xgboost" 2>/dev/null; then
  env=$envs/$matrix_env
  py=$env/bin/python
  export GOLDEN_BLOCK_AG_TORCHFIX=1
  echo "golden $id-zoo: golden-$id is missing or stale; writing with the test-matrix venv $env (ag_torchfix blocked)"
else
  start=$(date +%s)
  rm -rf "$env"
  "$python" -m venv "$env"
  pip_install --upgrade pip
  set -f  # recipe lines hold extras in brackets: no globbing
  while IFS= read -r line; do
    # shellcheck disable=SC2086  # each recipe line is a list of pip arguments
    pip_install $line
  done <<< "$pip_steps"
  set +f
  if [ "$with_pkg" = 1 ]; then
    pip_install --no-deps -e .
  fi
  echo "$hash" > "$env/.stamp"
  echo "$(( $(date +%s) - start ))" > "$env/.build-seconds"
  echo "golden $id: built $env in $(( $(date +%s) - start ))s"
fi
if [ "$zoo" = 1 ] && [ -z "${GOLDEN_BLOCK_AG_TORCHFIX:-}" ]; then
  # the zoo's model libraries, the venv's other packages held where its recipe put them
  constraints=$(mktemp)
  "$py" -m pip freeze --disable-pip-version-check 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' \
    | grep -v -i -E '^(lightgbm|catboost|xgboost|xgboost-cpu)==' > "$constraints"
  # shellcheck disable=SC2086  # a list of requirement specifiers
  pip_install -c "$constraints" $ZOO_PKGS
  rm -f "$constraints"
fi
if [ "$with_pkg" = 0 ] && [ -z "${GOLDEN_BLOCK_AG_TORCHFIX:-}" ] \
   && "$py" -I -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('ag_torchfix') is None)"; then
  echo "golden $id: ag_torchfix is installed in $env; goldens are written without it (rm -rf $env to rebuild)" >&2
  exit 1
fi
if [ "$with_pkg" = 1 ]; then export GOLDEN_TRAIN_WITH_AG_TORCHFIX=1; else unset GOLDEN_TRAIN_WITH_AG_TORCHFIX; fi
start=$(date +%s)
if [ "$zoo" = 1 ]; then
  nice -n 10 "$py" -I tools/goldens/write_golden.py --zoo "$PWD/tests/goldens" "$id-zoo"
  id=$id-zoo
else
  nice -n 10 "$py" -I tools/goldens/write_golden.py "$PWD/tests/goldens" "$id"
fi
echo "golden $id: written in $(( $(date +%s) - start ))s ($(du -sh "tests/goldens/$id" | cut -f1))"

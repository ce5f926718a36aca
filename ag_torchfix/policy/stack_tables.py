"""Facts about fastai's and torch's classes, measured per stack and shipped as data, so that ``ag-torchfix scan``
needs neither fastai nor torch (importing them costs seconds; the scan of a whole predictor should cost less than
picklescan's).

``stack_tables.json`` (written by ``tools/sweep_stack_tables.py``, run in each measured environment) holds, for each
stack (the Python version, patch release included: the standard library's classes change between them, and the
versions of fastai, fastcore, fasttransform, torch, numpy, pandas and
autogluon.tabular):

- ``methods``: for every class the fastai-internals allowlist builds, the attribute names that are methods of it as
  a process that imported ``fastai.tabular.all`` sees them (``verdicts._shadows``: a BUILD state key naming one
  would shadow it);
- ``importable``: the fastai-internals allowlist names that import on this stack (the secure load refuses a file
  naming one that does not);
- ``torch_defaults``: the names torch's weights-only unpickler accepts by default (``_get_allowed_globals``).

On a stack without a table, ``stack()`` is None and the callers fall back to importing the libraries, as before.
Reading installed versions uses package metadata only (nothing is imported).
"""

from __future__ import annotations

import functools
import json
import os
import sys

from ..core.versions import installed_versions

TABLE = os.path.join(os.path.dirname(__file__), "stack_tables.json")
PACKAGES = ("fastai", "fastcore", "fasttransform", "torch", "numpy", "pandas", "autogluon.tabular")


def stack_key() -> str:
    """This environment's stack, as the tables name it."""
    versions = installed_versions(PACKAGES)
    return "|".join([f"py{sys.version.split()[0]}", *(f"{n}={versions.get(n, '-')}" for n in PACKAGES)])


@functools.lru_cache(maxsize=1)
def _tables() -> dict:
    try:
        with open(TABLE, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return {}


@functools.lru_cache(maxsize=1)
def stack() -> dict | None:
    """This stack's tables ({"methods": {class: frozenset}, "importable": frozenset, "torch_defaults": frozenset}), or
    None."""
    tables = _tables()
    entry = tables.get("stacks", {}).get(stack_key())
    if entry is None:
        return None
    sets = tables["sets"]
    return {"methods": {cls: frozenset(sets[i]) for cls, i in entry["methods"].items()},
            "importable": frozenset(sets[entry["importable"]]), "torch_defaults": frozenset(sets[entry["torch_defaults"]])}


def methods(cls: str) -> frozenset[str] | None:
    """The method names of allowlisted class ``cls`` on this stack (empty: not importable there); None: no table."""
    found = stack()
    return None if found is None else found["methods"].get(cls, frozenset())


def importable() -> frozenset[str] | None:
    found = stack()
    return None if found is None else found["importable"]


def torch_defaults() -> frozenset[str] | None:
    found = stack()
    return None if found is None else found["torch_defaults"]


def measured() -> list[str]:
    """The stacks the shipped tables were measured on."""
    return sorted(_tables().get("stacks", {}))

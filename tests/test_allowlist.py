"""The allowlist is data with rules: exact names, one-line reasons, and nothing dangerous."""

from __future__ import annotations

import collections
import importlib
import operator
import os
import pickle
import re
import subprocess
import warnings

import pytest

from ag_torchfix.policy import allowlist, denylist, shims
from ag_torchfix.formats import pickle_scan

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
ENTRIES = allowlist.FASTAI_INTERNALS


def test_entries_are_exact_unique_names_with_one_line_reasons():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names)), "duplicate entries"
    for e in ENTRIES:
        assert NAME.match(e.name), f"not an exact dotted name: {e.name!r}"
        assert e.use in (allowlist.CONSTRUCT, allowlist.CALL, allowlist.REFERENCE), e
        assert e.reason.strip() and "\n" not in e.reason and len(e.reason) < 200, e
    for table in (allowlist.SHIMS, allowlist.DEFAULTDICT_FACTORIES, allowlist.GETATTR_PAIRS):
        assert all(reason.strip() and "\n" not in reason for reason in table.values())
    assert not set(names) & set(allowlist.SHIMS), "a shimmed name must not also be allowed as itself"


def test_no_entry_is_a_known_dangerous_primitive_by_name():
    for name in allowlist.names() - set(allowlist.SHIMS):
        assert denylist.danger(name) is None, f"{name}: {denylist.danger(name)}"


def _forbidden_objects():
    """The primitives the issue names, as objects, so aliases under other names are caught too."""
    import fastai.learner
    import joblib
    import pandas
    import torch

    from autogluon.common.loaders import load_pkl

    objects = [os.system, os.popen, os.execv, subprocess.run, subprocess.Popen, subprocess.call, eval, exec,
               compile, __import__, importlib.import_module, open, getattr, setattr, delattr, operator.attrgetter,
               operator.methodcaller, torch.load, torch.save, pickle.load, pickle.loads, pickle.Unpickler,
               fastai.learner.load_learner, pandas.read_pickle, load_pkl.load, joblib.load, fastai.learner.Learner.export,
               fastai.learner.Learner.save]
    try:
        from fastcore.xtras import run

        objects.append(run)
    except ImportError:
        pass
    return objects


def test_no_entry_resolves_to_a_forbidden_object():
    forbidden = {id(o) for o in _forbidden_objects()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in ENTRIES:
            try:
                obj = shims.resolve(e.name)
            except LookupError:
                continue  # another stack's spelling (checked where that stack is installed)
            assert id(obj) not in forbidden, e.name
            assert not isinstance(obj, type(os)), f"{e.name} is a module"
    for name, obj in shims.shim_objects().items():
        assert id(obj) not in forbidden and obj is not collections.defaultdict, name


def test_every_entry_of_this_stack_resolves():
    """An entry whose module imports must name a real object (catches typos and renames)."""
    unresolved = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in ENTRIES:
            module_name, attr = e.name.rsplit(".", 1)
            try:
                module = importlib.import_module(module_name)
                getattr(module, attr)
            except ImportError:
                continue  # another stack's module, or a name the library itself moved (fastcore.transform)
            except AttributeError:
                pass  # nested names (FillStrategy.median style) are resolved below
            try:
                shims.resolve(e.name)
            except LookupError:
                unresolved.append(e.name)
    assert not unresolved


def test_getattr_pairs_and_factories_resolve():
    assert shims._getattr_pairs() and len(shims._getattr_pairs()) == len(allowlist.GETATTR_PAIRS)
    assert shims.defaultdict_factories() == (int,)


def test_genuine_exports_use_reference_entries_only_as_values(predictors):
    """What the sweep established still holds for the fixtures: REFERENCE names are never called."""
    import zipfile

    by_name = {e.name: e for e in ENTRIES}
    for path in predictors.values():
        for file in path.rglob("model-internals.pkl"):
            with zipfile.ZipFile(file) as z:
                (member,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
                result = pickle_scan.scan(z.open(member))
            for name, uses in result.globals.items():
                entry = by_name.get(name)
                if entry is not None and entry.use == allowlist.REFERENCE:
                    assert uses == {pickle_scan.REFERENCED}, (file, name, uses)


@pytest.mark.parametrize("name", ["os.system", "posix.system", "subprocess.Popen", "builtins.eval", "builtins.exec",
                                  "builtins.getattr", "operator.attrgetter", "pickle.loads", "torch.load",
                                  "fastai.learner.load_learner", "pandas.read_pickle", "joblib.load",
                                  "importlib.import_module", "fastcore.xtras.run", "builtins.open"])
def test_denylist_knows_the_classic_primitives(name):
    assert denylist.danger(name)

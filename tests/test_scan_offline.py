"""Issue 21: ``ag-torchfix scan`` judges fastai internals without importing fastai, torch, numpy or pandas.

The facts it needs about the libraries' classes ship as measured data per stack (``policy/stack_tables.json``); the
learner schema is checked on records read by ``load/record_reader`` instead of torch's unpickler.  These tests hold
the two paths to one verdict: genuine files of every writer, hostile learners the materializer refuses, tensors
outside their storage, names a stack cannot import; and they check that the shipped table is what this stack's
classes say.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import io
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import full_pickle_learner, plant, save_learner

from ag_torchfix.cli import scanner
from ag_torchfix.core.errors import SecureLoadError, UnreadableFileError
from ag_torchfix.formats import archive
from ag_torchfix.load import materialize, record_reader, secure_load
from ag_torchfix.policy import shims, stack_tables
from ag_torchfix.policy import verdicts as policy

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDENS = sorted((ROOT / "tests" / "goldens").glob("*/**/model-internals.pkl"))
HEAVY = ("torch", "fastai", "fastcore", "numpy", "pandas", "sklearn", "autogluon")

needs_table = pytest.mark.skipif(stack_tables.stack() is None, reason="no measured stack table for this stack")


def loader_verdict(path: pathlib.Path) -> str:
    """What the secure load itself decides (torch, fastai and all), in the scanner's words."""
    try:
        secure_load.check_learner(path.read_bytes(), path=str(path))
    except UnreadableFileError:
        return scanner.UNREADABLE
    except SecureLoadError:
        return scanner.NEEDS_TRUST
    return scanner.ALLOWED


def offline_verdict(path: pathlib.Path) -> str:
    report = scanner.scan_file(str(path))
    return report.verdict


SCAN_IN_A_FRESH_PROCESS = textwrap.dedent("""
    import json, pathlib, sys
    from ag_torchfix.policy import stack_tables
    if sys.argv[2] == "no-table":
        stack_tables.TABLE = pathlib.Path("/nonexistent/stack_tables.json")
    from ag_torchfix.cli import scanner
    report = scanner.scan_paths([sys.argv[1]])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
    print(json.dumps({"heavy": heavy, "files": {f.path: [f.verdict, f.constructs] for f in report.files},
                      "measured": scanner.has_stack_tables()}))
""")


def scan_fresh(path, table: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCAN_IN_A_FRESH_PROCESS, str(path), table, ",".join(HEAVY)],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                             "AG_TORCHFIX_AUTOLOAD": "0"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@needs_table
def test_a_whole_predictor_scans_without_importing_the_libraries_and_as_the_libraries_judge_it(zoo_predictors):
    predictor = zoo_predictors["zoo-binary-stacked"]
    offline, imported = scan_fresh(predictor, "table"), scan_fresh(predictor, "no-table")
    assert offline["measured"] and not imported["measured"]
    assert offline["heavy"] == [], offline["heavy"]
    assert "torch" in imported["heavy"]  # the fallback asks the libraries themselves
    assert offline["files"] == imported["files"]
    assert sum(p.endswith("model-internals.pkl") for p in offline["files"]) >= 4


@needs_table
@pytest.mark.parametrize("path", GOLDENS, ids=lambda p: str(p.relative_to(ROOT / "tests" / "goldens")))
def test_every_writers_genuine_internals_pass_the_offline_check(path):
    data = path.read_bytes()
    check = policy.check_internals(io.BytesIO(data))
    assert check.judgement.ok
    pickled = archive.read_record(io.BytesIO(data), check.archive, check.archive.find("data.pkl"),
                                  limit=archive.MAX_PICKLE)
    materialize.check(record_reader.read(pickled, check.archive), record_reader.OFFLINE)


HOSTILE = {  # a learner the materializer refuses, each at another kind of position
    "callback-is-a-function": lambda l: l.cbs.append(print),
    "logger-is-a-class": lambda l: setattr(l, "logger", collections.Counter),
    "extra-attribute": lambda l: setattr(l.recorder, "planted", 1),
    "model-module-twice": lambda l: setattr(l.model, "again", l.model.layers[0]) if hasattr(l.model, "layers") else
    setattr(l, "planted", 1),
    "loss-activation": lambda l: setattr(l.loss_func, "activation", print),
}


@needs_table
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_learners_get_the_loaders_verdict_offline(case, binary_predictor, internals_of, tmp_path):
    target = tmp_path / "model-internals.pkl"
    learner = full_pickle_learner(internals_of(binary_predictor))
    HOSTILE[case](learner)
    save_learner(learner, target)
    assert loader_verdict(target) != scanner.ALLOWED, "the hostile learner must be refused by the loader"
    assert offline_verdict(target) == loader_verdict(target)


@needs_table
def test_genuine_internals_of_the_test_predictors_get_the_loaders_verdict(predictors, internals_of):
    for name, predictor in predictors.items():
        path = internals_of(predictor)
        assert offline_verdict(path) == loader_verdict(path) == scanner.ALLOWED, name


@needs_table
def test_a_planted_harmless_object_is_judged_alike(binary_predictor, internals_of, tmp_path):
    target = shutil.copy(internals_of(binary_predictor), tmp_path / "model-internals.pkl")
    plant(pathlib.Path(target), note=collections.OrderedDict(a=1))
    assert offline_verdict(pathlib.Path(target)) == loader_verdict(pathlib.Path(target)) != scanner.ALLOWED


def test_a_tensor_reaching_past_its_storage_is_refused_offline():
    storage = record_reader.StorageStub("f4", 4, 6, "0")
    inside = record_reader.TensorStub(storage, 0, (2, 3), (3, 1))
    past = record_reader.TensorStub(storage, 1, (2, 3), (3, 1))
    broadcast = record_reader.TensorStub(storage, 0, (1000, 3), (0, 1))
    token = materialize._world.set(record_reader.OFFLINE)
    try:
        assert materialize._tensor_problem(inside) is None
        assert "over a storage of 24" in materialize._tensor_problem(past)
        assert "zero stride" in materialize._tensor_problem(broadcast)
    finally:
        materialize._world.reset(token)


def test_a_name_without_a_stand_in_leaves_the_verdict_to_the_libraries():
    with pytest.raises(record_reader.Undecided):
        record_reader.resolve("numpy.random._pickle.__randomstate_ctor")
    assert isinstance(record_reader.resolve("fastai.tabular.learner.TabularLearner"), type)
    assert record_reader.resolve("numpy.core.multiarray._reconstruct") is record_reader.resolve(
        "numpy._core.multiarray._reconstruct")


@needs_table
def test_the_shipped_table_is_what_this_stacks_classes_say():
    """A stale table would give the scanner another verdict than the loader: recompute it from the classes."""
    for module in policy._CLASS_CONTEXT:
        importlib.import_module(module)
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        sweep = importlib.import_module("sweep_stack_tables")
    finally:
        sys.path.remove(str(ROOT / "tools"))
    measured = sweep.measure()
    table = stack_tables.stack()
    assert {c: frozenset(m) for c, m in measured["methods"].items()} == table["methods"]
    assert frozenset(measured["importable"]) == table["importable"]
    assert frozenset(measured["torch_defaults"]) == table["torch_defaults"]
    cls = shims.resolve("torch.nn.modules.linear.Linear")
    assert "forward" in table["methods"]["torch.nn.modules.linear.Linear"]
    assert policy.is_method(inspect.getattr_static(cls, "forward"))


def test_a_stack_without_a_table_says_so(binary_predictor):
    out = subprocess.run(
        [sys.executable, "-c", "import pathlib, sys\nfrom ag_torchfix.policy import stack_tables\n"
         "stack_tables.TABLE = pathlib.Path('/nonexistent.json')\nfrom ag_torchfix.cli import commands\n"
         "sys.exit(commands.main(['scan', sys.argv[1]]))", str(binary_predictor)],
        capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr
    assert "no measured stack table ships for this environment" in out.stdout


def test_installed_versions_are_what_package_metadata_says():
    import importlib.metadata as md

    for name, version in stack_tables.installed_versions(stack_tables.PACKAGES).items():
        assert md.version(name) == version
    assert set(stack_tables.installed_versions(stack_tables.PACKAGES)) == {n for n in stack_tables.PACKAGES if _installed(n)}


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False

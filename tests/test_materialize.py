"""Issue 17: nothing the file names is ever called.  The learner is rebuilt from inert records by trusted code.

The red team ran fastai's ``_wif`` (an allowlisted function; it imports ``mkl``, so a planted ``mkl.py`` runs) from
four positions where fastai calls what the file put there, although every class and function in those files is
allowlisted and every BUILD state passed the static rules.  Each case is shown live upstream (AutoGluon with full
pickle, the package off), then refused by the package (the materializer names the position) with nothing run, and
by the scanner.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import full_pickle_learner, save_learner

import ag_torchfix
from ag_torchfix.policy import learner_schema
from ag_torchfix.load import materialize
from ag_torchfix.formats import records
from ag_torchfix.cli import scanner

TESTS = str(pathlib.Path(__file__).resolve().parent)
MKL_PY = "import os\nopen(os.environ['MKL_MARKER'], 'a').write('imported\\n')\n"


def _cbs(learner, wif):
    learner.cbs.append(wif)


def _worker_init(learner, wif):
    for dl in learner.dls.loaders:
        dl.fake_l.num_workers = 1  # worker_init_fn is already _wif: fastai's own value, harmless with no workers


def _transform_to(learner, wif):
    learner.dls.loaders[0].after_batch.fs[0].to = wif


def _loss_activation(learner, wif):
    learner.loss_func.activation = wif


CASES = {"cbs-item": _cbs, "worker-init": _worker_init, "transform-to": _transform_to,
         "loss-activation": _loss_activation}

RUN = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    if sys.argv[1] == "with":
        import ag_torchfix
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    out = {{}}
    for case, path in json.loads(sys.argv[2]).items():
        os.environ["MKL_MARKER"] = path + ".mkl"
        if os.path.exists(path + ".mkl"):
            os.remove(path + ".mkl")
        sys.modules.pop("mkl", None)
        try:
            p = TabularPredictor.load(path, verbosity=0)
            p.predict(make_table(40, p.problem_type, seed=5).drop(columns=["label"]))
            error = None
        except BaseException as exc:
            error = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{str(exc)[:400]}}"
        out[case] = {{"error": error, "ran": os.path.exists(path + ".mkl")}}
    print("RESULT" + json.dumps(out))
    """
).format(tests=TESTS)


def run(with_package: bool, predictors: dict[str, pathlib.Path], cwd: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AG_TORCHFIX_STRICT", "PYTHONPATH",
                                                            "TORCH_FORCE_WEIGHTS_ONLY_LOAD")}
    env["AG_TORCHFIX_AUTOLOAD"] = "0"
    out = subprocess.run([sys.executable, "-c", RUN, "with" if with_package else "without",
                          json.dumps({k: str(v) for k, v in predictors.items()})],
                         capture_output=True, text=True, env=env, timeout=900, cwd=cwd)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
    assert line is not None, out.stderr[-3000:]
    return json.loads(line[len("RESULT"):])


@pytest.fixture(scope="module")
def tampered(binary_predictor, tmp_path_factory):
    from fastai.data.load import _wif

    root = tmp_path_factory.mktemp("wif")
    (root / "mkl.py").write_text(MKL_PY)  # `python -c` puts the working directory on sys.path
    made = {}
    for case, tamper in CASES.items():
        dest = shutil.copytree(binary_predictor, root / case)
        internals = next(dest.rglob("model-internals.pkl"))
        learner = full_pickle_learner(internals)
        tamper(learner, _wif)
        save_learner(learner, internals)
        made[case] = dest
    return root, made


def test_wif_runs_upstream_from_each_position(tampered):
    root, made = tampered
    result = run(False, made, root)
    for case in CASES:
        if case == "worker-init" and "'in_order'" in (result[case]["error"] or ""):
            # fastai 2.7's _FakeLoader lacks what torch >= 2.6's DataLoader needs to start workers: upstream fails
            # before any worker runs on that stack (legacy-ag11); the case is live on fastai 2.8
            continue
        assert result[case]["ran"], f"{case}: upstream did not run the planted mkl.py ({result[case]})"


def test_package_refuses_each_position_and_nothing_runs(tampered):
    root, made = tampered
    result = run(True, made, root)
    for case in CASES:
        assert not result[case]["ran"], f"{case}: the planted mkl.py ran with ag_torchfix ({result[case]})"
        assert "DisallowedGlobalsError" in (result[case]["error"] or ""), (case, result[case])


@pytest.mark.parametrize("case,where", [
    ("cbs-item", "not a genuine learner at learner.cbs[4]"),
    ("worker-init", "fake_l.dataset.num_workers: 1, but genuine learners hold 0 here"),
    ("transform-to", "not a genuine learner at learner.dls.loaders[0].after_batch.fs[0].to"),
    # the static pass sees this one first: `activation` is a method of the loss class
    ("loss-activation", "CrossEntropyLossFlat: it sets activation, which shadows a method"),
])
def test_the_refusal_names_the_position_and_the_scanner_agrees(tampered, case, where):
    _, made = tampered
    internals = next(made[case].rglob("model-internals.pkl"))
    with pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        ag_torchfix.load_learner(internals)
    assert where in str(err.value)
    report = scanner.scan_file(str(internals))
    assert report.verdict != scanner.ALLOWED, report


# --- the schema itself ----------------------------------------------------------------------------------

def test_schema_covers_the_allowlist_exactly():
    """Every fastai/fastcore/fasttransform/AutoGluon/torch.nn class the internals allowlist admits is a record of
    the schema, and every function it admits is placed by the schema: nothing reaches torch as a real class."""
    from ag_torchfix.policy import allowlist

    prefixes = ("fastai.", "fastcore.", "fasttransform.", "autogluon.", "torch.nn.")
    classes = {e.name for e in allowlist.FASTAI_INTERNALS if e.use == allowlist.CONSTRUCT and e.name.startswith(prefixes)}
    assert classes == set(learner_schema.CLASSES)
    functions = {e.name for e in allowlist.FASTAI_INTERNALS if e.use == allowlist.REFERENCE
                 and not isinstance(materialize._resolved(e.name), type)}
    assert functions == set(learner_schema.FUNCTIONS)


def test_records_are_inert():
    cls = records.record_type("fastai.tabular.learner.TabularLearner")
    inst = cls.__new__(cls)
    inst.__setstate__({"forward": 1})
    with pytest.raises(AttributeError):
        inst.forward  # noqa: B018  (the state is data, not attributes)
    with pytest.raises(AttributeError):
        inst.__dict__  # noqa: B018
    with pytest.raises(Exception):
        inst.__setstate__({})  # built once
    with pytest.raises(TypeError):
        records.ref("fastai.data.load._wif")(0)  # a reference cannot be called


def test_genuine_learner_materializes_as_full_pickle_does(binary_predictor, internals_of):
    from helpers import assert_same_graph

    internals = internals_of(binary_predictor)
    assert_same_graph(ag_torchfix.load_learner(internals), full_pickle_learner(internals))

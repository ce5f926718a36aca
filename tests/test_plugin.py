"""The start-up hook: active in every process of the environment without an import; real processes only."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = str(ROOT / "tests")

LOAD_AND_PREDICT = textwrap.dedent(
    f"""
    import json, sys
    sys.path.insert(0, {TESTS!r})
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    result = {{"imported_by_user": False}}
    try:
        p = TabularPredictor.load(sys.argv[1], verbosity=0)
        pred = p.predict(make_table(20, "binary", seed=5).drop(columns=["label"]), model="NeuralNetFastAI")
        result["predictions"] = pred.tolist()
    except Exception as exc:
        result["error"] = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
    mod = sys.modules.get("ag_torchfix")
    result["how"] = mod.status()["how"] if mod else None
    print(json.dumps(result))
    """
)


def run_python(code: str, *args, env_extra=None, python=sys.executable, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AG_TORCHFIX_AUTOLOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD")}
    env.update(env_extra or {})
    return subprocess.run([python, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def last_json(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_startup_only_registers_a_finder():
    probe = ("import sys, json; print(json.dumps({'hook': '_ag_torchfix_autoload' in sys.modules, "
             "'heavy': [m for m in ('ag_torchfix', 'torch', 'fastai', 'autogluon') if m in sys.modules]}))")
    with_hook, without = last_json(run_python(probe)), last_json(run_python(probe, env_extra={"AG_TORCHFIX_AUTOLOAD": "0"}))
    assert with_hook["hook"] is True and without["hook"] is False
    assert with_hook["heavy"] == without["heavy"]  # (AutoGluon 1.1's namespace .pth imports `autogluon` itself)
    assert "ag_torchfix" not in with_hook["heavy"] and "torch" not in with_hook["heavy"]


def test_fresh_process_never_importing_the_package_loads_securely_and_refuses_tampering(binary_predictor,
                                                                                         tampered_predictor,
                                                                                         tmp_path):
    forced = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    good = last_json(run_python(LOAD_AND_PREDICT, binary_predictor, env_extra=forced))
    assert good.get("predictions") and good["how"] == "plugin", good
    bad = last_json(run_python(LOAD_AND_PREDICT, tampered_predictor, env_extra=forced))
    assert bad["error"].startswith("ag_torchfix.errors.DisallowedGlobalsError") and "posix.system" in bad["error"]
    assert not (tmp_path / "PWNED").exists()


def test_opt_out_really_opts_out(binary_predictor):
    off = {"AG_TORCHFIX_AUTOLOAD": "0", "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    result = last_json(run_python(LOAD_AND_PREDICT, binary_predictor, env_extra=off))
    assert result["how"] is None and "explicit pickle_module" in result["error"]
    hook = last_json(run_python("import sys, json; print(json.dumps('_ag_torchfix_autoload' in sys.modules))",
                                env_extra=off))
    assert hook is False
    explicit = last_json(run_python("import ag_torchfix, json; print(json.dumps(ag_torchfix.status()['how']))",
                                    env_extra=off))
    assert explicit == "import"


SPAWN = textwrap.dedent(
    f"""
    import json, multiprocessing as mp, sys
    sys.path.insert(0, {TESTS!r})

    def child(path, queue):
        from autogluon.tabular import TabularPredictor
        from helpers import make_table
        try:
            p = TabularPredictor.load(path, verbosity=0)
            queue.put(("ok", p.predict(make_table(10, "binary", seed=5).drop(columns=["label"]),
                                       model="NeuralNetFastAI").tolist()))
        except Exception as exc:
            queue.put(("error", f"{{type(exc).__module__}}.{{type(exc).__name__}}"))

    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        results = []
        for path in sys.argv[1:]:
            queue = ctx.Queue()
            proc = ctx.Process(target=child, args=(path, queue))
            proc.start()
            results.append(queue.get(timeout=300))
            proc.join()
        print(json.dumps(results))
    """
)


def test_multiprocessing_spawn_child_is_protected(binary_predictor, tampered_predictor, tmp_path):
    script = tmp_path / "spawn_parent.py"
    script.write_text(SPAWN)
    env = {k: v for k, v in os.environ.items() if k != "AG_TORCHFIX_AUTOLOAD"}
    env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    out = subprocess.run([sys.executable, str(script), str(binary_predictor), str(tampered_predictor)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    (good_kind, good), (bad_kind, bad) = json.loads(out.stdout.strip().splitlines()[-1])
    assert good_kind == "ok" and len(good) == 10
    assert (bad_kind, bad) == ("error", "ag_torchfix.errors.DisallowedGlobalsError")
    assert not (tmp_path / "PWNED").exists()


def test_a_broken_package_is_reported_once_and_never_breaks_the_interpreter(tmp_path):
    fake = tmp_path / "ag_torchfix"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('simulated breakage')\n")
    out = run_python("import json, torch, fastai; print(json.dumps('ok'))",
                     env_extra={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    assert last_json(out) == "ok"
    assert out.stderr.count("ag_torchfix: automatic activation failed") == 1
    assert "simulated breakage" in out.stderr


def _site_packages(venv: pathlib.Path) -> pathlib.Path:
    (path,) = venv.glob("lib/python*/site-packages")
    return path


def _leftovers(site: pathlib.Path) -> list[str]:
    return sorted(p.name for p in site.iterdir() if "torchfix" in p.name.lower())


@pytest.mark.parametrize("mode", ["wheel", "editable"])
def test_install_activates_and_uninstall_leaves_nothing(mode, tmp_path):
    """A real pip install into a fresh virtual environment (no torch needed for the start-up hook)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    if mode == "wheel":
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)], check=True,
                       timeout=600, capture_output=True)
        (wheel,) = (tmp_path / "dist").glob("ag_torchfix-*.whl")
        target = [str(wheel)]
    else:
        project = tmp_path / "project"
        shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".envs", ".cache", ".git", "*.pyc"))
        target = ["-e", str(project)]
    subprocess.run([*pip, "install", "--no-deps", *target], check=True, timeout=600, capture_output=True)
    site = _site_packages(venv)
    assert {"ag_torchfix.pth", "_ag_torchfix_autoload.py"} <= set(_leftovers(site))
    probe = ("import sys, json, importlib.metadata as md; "
             "eps = [e.value for e in md.entry_points(group='autogluon.plugins') if e.name == 'ag_torchfix']; "
             "print(json.dumps({'hook': '_ag_torchfix_autoload' in sys.modules, 'eps': eps}))")
    result = last_json(run_python(probe, python=str(venv / "bin" / "python"), cwd=tmp_path))
    assert result == {"hook": True, "eps": ["ag_torchfix.activation:activate"]}
    status = subprocess.run([str(venv / "bin" / "python"), "-m", "ag_torchfix"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert status.returncode == 0 and "start-up hook: installed" in status.stdout, status.stderr
    subprocess.run([*pip, "uninstall", "-y", "ag-torchfix"], check=True, timeout=300, capture_output=True)
    assert _leftovers(site) == []
    after = last_json(run_python("import sys, json; print(json.dumps('_ag_torchfix_autoload' in sys.modules))",
                                 python=str(venv / "bin" / "python"), cwd=tmp_path))
    assert after is False


RAY_FIT = textwrap.dedent(
    f"""
    import json, sys
    if sys.argv[1] == "parent-imports":
        import ag_torchfix
    sys.path.insert(0, {TESTS!r})
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    p = TabularPredictor(label="label", path=sys.argv[2], verbosity=2).fit(
        make_table(200, "binary"), hyperparameters={{"FASTAI": {{"epochs": 2}}}}, num_bag_folds=2, num_bag_sets=1,
        fit_weighted_ensemble=False, ag_args_ensemble={{"fold_fitting_strategy": "parallel_local"}})
    print("@@" + json.dumps(p.model_names()))
    """
)


def _legacy_fastai() -> bool:
    import importlib.metadata as md

    return tuple(int(x) for x in md.version("fastai").split(".")[:3]) <= (2, 7, 18)


@pytest.mark.skipif(not _legacy_fastai(), reason="the worker failure exists on fastai <= 2.7.18 only")
def test_ray_fold_workers_are_protected_by_the_plugin(tmp_path):
    """Parallel fold fitting on Ray's local cluster, on the hardened legacy stack (forced weights-only)."""
    pytest.importorskip("ray")
    forced = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}

    def fit(mode, extra):
        out = run_python(RAY_FIT, mode, tmp_path / mode, env_extra={**forced, **extra}, cwd=tmp_path)
        lines = [x for x in out.stdout.splitlines() if x.startswith("@@")]
        models = json.loads(lines[-1][2:]) if lines else []  # AutoGluon raises when no model trained
        return models, out.stdout + out.stderr

    # Without the start-up hook, importing the package in the parent does not reach Ray's workers.
    models, log = fit("parent-imports", {"AG_TORCHFIX_AUTOLOAD": "0"})
    assert "ParallelLocalFoldFittingStrategy" in log
    assert models == [] and "Unsupported global: GLOBAL fastcore.foundation.L" in log
    # With it, no process imports the package explicitly, and the workers train.
    models, log = fit("no-import", {})
    assert "ParallelLocalFoldFittingStrategy" in log and models == ["NeuralNetFastAI_BAG_L1"]

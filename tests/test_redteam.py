"""Red-team attacks against ag_torchfix (attacker: writes anything in the predictor directory).

Every attack is built from a genuine predictor and states the promise it tested.  Sixteen of them broke a promise
when the red team first ran them (they were kept as strict xfails until fixed); all are ordinary tests now:
strict-mode classes hidden in pandas objects and torch module hooks, call arguments that are called, tiny files
that allocate, method-shadowing attributes, numpy paths, XGBoost and text files the scan skipped, FIFOs and
/dev/zero links, lock files that block, trust judged on a path instead of the file read, hooks filled after their
check, large files read twice, and directory chains deep enough to exhaust the stack.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
from helpers import (
    G, I, PROTO, S, OsSystem, data_pkl, dump_obj, full_pickle_learner, load_obj, make_table, plant_os_system,
    rewrite_archive, save_learner,
)

import ag_torchfix
from ag_torchfix.cli import scanner

TESTS = str(pathlib.Path(__file__).resolve().parent)


def strict_load_predict(predictor: pathlib.Path, model: str | None = None):
    """Load and predict in strict mode, in this process; returns the exception (or None)."""
    from autogluon.tabular import TabularPredictor

    try:
        with ag_torchfix.strict():
            p = TabularPredictor.load(str(predictor), verbosity=0)
            p.predict(make_table(20, p.problem_type, seed=5).drop(columns=["label"]), model=model)
    except Exception as exc:  # noqa: BLE001 - the type is what the tests judge
        return exc
    return None


def scan_says_secure(path: pathlib.Path, *, strict: bool) -> bool:
    """What `ag-torchfix scan [--strict] PATH` concludes: every file 'loads securely' (exit 0)."""
    report = scanner.scan_paths([str(path)], strict=strict)
    return bool(report.files) and report.exit_code == 0


@pytest.fixture
def zoo_copy(zoo_predictors, tmp_path):
    def make(name: str = "zoo-multiclass") -> pathlib.Path:
        return shutil.copytree(zoo_predictors[name], tmp_path / f"tampered-{name}")

    return make


@pytest.fixture
def binary_copy(binary_predictor, tmp_path):
    return shutil.copytree(binary_predictor, tmp_path / "tampered-binary")


def _unblock_fifo(path: pathlib.Path, data: bytes = b"") -> None:
    """Release a reader blocked in open() on a FIFO (and give it ``data``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no reader waiting
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)


def _run_in_thread(fn, timeout: float):
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return thread, result


# =====================================================================================================
# 1. Strict mode: code runs
# =====================================================================================================

def _hide_native_compiler_in_stacker(predictor: pathlib.Path, base_path: str) -> pathlib.Path:
    """WeightedEnsemble_L2 gets a fake base model 'EVIL' whose type is the RF native compiler, stored in a
    pandas Series instead of a dict (dispatch's walk skips pandas objects, so the SLOTS row
    StackerEnsembleModel.base_model_types_dict[*] never sees it).  At predict,
    StackerEnsembleModel.preprocess -> load_base_model('EVIL') -> model_type.load(model_path), i.e.
    AbstractNativeCompiler.load(path) -> pickle.loads(open(path/model_native.pkl).read())."""
    import pandas as pd
    from autogluon.tabular.models.rf.compilers.native import AbstractNativeCompiler

    path = predictor / "models" / "WeightedEnsemble_L2" / "model.pkl"
    model = load_obj(path)
    model.stack_column_prefix_lst = list(model.stack_column_prefix_lst) + ["EVIL"]
    model.stack_column_prefix_to_model_map = {**model.stack_column_prefix_to_model_map, "EVIL": "EVIL"}
    model.base_model_types_dict = pd.Series({**model.base_model_types_dict, "EVIL": AbstractNativeCompiler},
                                            dtype=object)
    model.base_model_paths_dict = {**model.base_model_paths_dict, "EVIL": base_path}
    dump_obj(model, path)
    return path


def test_strict_stacker_base_model_type_hidden_in_a_series_runs_a_planted_pickle(zoo_copy, tmp_path):
    predictor = zoo_copy("zoo-multiclass")
    marker = tmp_path / "PWNED-stacker"
    _hide_native_compiler_in_stacker(predictor, ".")
    (predictor / "models" / "WeightedEnsemble_L2" / "model_native.pkl").write_bytes(
        pickle.dumps(OsSystem(marker), protocol=2))
    err = strict_load_predict(predictor, "WeightedEnsemble_L2")
    ran = marker.exists()
    assert not ran, "strict mode ran os.system from models/WeightedEnsemble_L2/model_native.pkl"
    assert isinstance(err, ag_torchfix.SecureLoadError), repr(err)


def test_strict_stacker_payload_outside_the_predictor_scan_says_loads_securely(zoo_copy, tmp_path):
    predictor = zoo_copy("zoo-multiclass")
    marker = tmp_path / "PWNED-outside"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model_native.pkl").write_bytes(pickle.dumps(OsSystem(marker), protocol=2))
    _hide_native_compiler_in_stacker(predictor, str(outside))
    said_secure = scan_says_secure(predictor, strict=True)
    err = strict_load_predict(predictor, "WeightedEnsemble_L2")
    assert not (said_secure and marker.exists()), "scan --strict: loads securely; strict load: os.system ran"
    assert not said_secure and isinstance(err, ag_torchfix.SecureLoadError)


def test_strict_torch_module_hook_calls_an_allowlisted_class_at_predict(zoo_copy, tmp_path, monkeypatch):
    from autogluon.tabular import TabularPredictor

    predictor = zoo_copy("zoo-multiclass")
    path = predictor / "models" / "NeuralNetTorch" / "model.pkl"
    model = load_obj(path)
    model.model.main_block[0]._forward_pre_hooks[0] = TabularPredictor  # a Linear inside EmbedNet.main_block
    dump_obj(model, path)
    said_secure = scan_says_secure(predictor / "models" / "NeuralNetTorch", strict=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    err = strict_load_predict(predictor, "NeuralNetTorch")
    created = sorted(os.listdir(cwd))
    assert created == [], f"TabularPredictor(...) ran from the file and created {created}"
    assert isinstance(err, ag_torchfix.SecureLoadError), repr(err)
    assert not said_secure


def test_strict_randomstate_ctor_calls_a_class_from_the_file_while_unpickling(binary_copy, tmp_path, monkeypatch):
    payload = (PROTO + G("numpy.random._pickle", "__randomstate_ctor") + S("label")
               + G("autogluon.tabular.predictor.predictor", "TabularPredictor") + b"\x86R.")
    target = binary_copy / "utils" / "attr" / "NeuralNetFastAI" / "y_pred_proba_val.pkl"
    target.write_bytes(payload)
    from ag_torchfix.load import strict_mode

    loader_cwd, scanner_cwd = tmp_path / "cwd-load", tmp_path / "cwd-scan"
    loader_cwd.mkdir()
    scanner_cwd.mkdir()
    monkeypatch.chdir(loader_cwd)
    with pytest.raises(ag_torchfix.SecureLoadError):
        strict_mode.load_pickle(payload, path=str(target))
    by_loader = sorted(os.listdir(loader_cwd))
    monkeypatch.chdir(scanner_cwd)
    report = scanner.scan_file(str(target), strict=True)  # the audit itself
    by_scanner = sorted(os.listdir(scanner_cwd))
    assert report.verdict != "allowed"
    assert by_loader == [] and by_scanner == [], (
        f"'nothing from the file was run', yet TabularPredictor('label') created {by_loader} (strict load) and "
        f"{by_scanner} (ag-torchfix scan --strict)")


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from ag_torchfix import strict_mode
    payload = bytes.fromhex(sys.argv[1])
    try:
        strict_mode.load_pickle(payload, path=sys.argv[2])
        print("LOADED")
    except Exception as exc:
        print("REFUSED", type(exc).__name__)
    # this process's own peak (VmHWM): ru_maxrss would carry the forking parent's (pytest's) peak across exec
    with open("/proc/self/status") as fh:
        peak_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print("MAXRSS_MIB", peak_kib // 1024)
    """
)


def test_strict_reconstruct_object_array_memory_from_a_tiny_file(tmp_path):
    n = 80_000_000
    payload = (PROTO + G("numpy._core.multiarray", "_reconstruct") + G("numpy", "ndarray") + I(n) + b"\x85"
               + b"C\x01O" + b"\x87R.")
    assert len(payload) < 100
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, payload.hex(), str(tmp_path / "utils" / "x.pkl")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert "MAXRSS_MIB" in out.stdout, out.stderr[-2000:]
    maxrss = int(out.stdout.split("MAXRSS_MIB")[1])
    assert maxrss < 512, f"{len(payload)}-byte file: peak RSS {maxrss} MiB ({out.stdout.split()[0]})"


# =====================================================================================================
# 2. Default mode (fastai internals): a callable from the file runs at predict
# =====================================================================================================

USE_DEFAULT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import ag_torchfix, torch
    from autogluon.tabular import TabularPredictor
    from helpers import make_table
    out = {{"threads_before": torch.get_num_threads(), "ipc_before": os.environ.get("IPC_ENABLE")}}
    try:
        p = TabularPredictor.load(sys.argv[1], verbosity=0)
        p.predict(make_table(20, p.problem_type, seed=5).drop(columns=["label"]))
        out["error"] = None
    except Exception as exc:
        out["error"] = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
        out["typed"] = isinstance(exc, ag_torchfix.SecureLoadError)
    out["threads_after"] = torch.get_num_threads()
    out["ipc_after"] = os.environ.get("IPC_ENABLE")
    print(json.dumps(out))
    """
).format(tests=TESTS)


MKL_PY = "open({marker!r}, 'w').write('imported')\n"  # fastcore's set_num_threads does `import mkl`


def test_default_mode_forward_attribute_runs_wif_at_predict(binary_predictor, internals_of, tmp_path):
    from fastai.data.load import _wif

    def run(predictor: pathlib.Path) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("AG_TORCHFIX_STRICT", "IPC_ENABLE", "PYTHONPATH")}
        out = subprocess.run([sys.executable, "-c", USE_DEFAULT, str(predictor)], capture_output=True, text=True,
                             env=env, timeout=600, cwd=predictor)  # `python -c` puts the working directory on sys.path
        return json.loads(out.stdout.strip().splitlines()[-1])

    control = shutil.copytree(binary_predictor, tmp_path / "genuine")
    (control / "mkl.py").write_text(MKL_PY.format(marker=str(tmp_path / "MKL-control")))
    assert run(control)["error"] is None and not (tmp_path / "MKL-control").exists()  # nothing imports it normally

    tampered = shutil.copytree(binary_predictor, tmp_path / "tampered")
    (tampered / "mkl.py").write_text(MKL_PY.format(marker=str(tmp_path / "MKL-imported")))
    internals = internals_of(tampered)
    learner = full_pickle_learner(internals)
    learner.model.bn_cont.forward = _wif  # an instance attribute: nn.Module calls self.forward(x)
    save_learner(learner, internals)
    scan_verdict = scanner.scan_file(str(internals)).verdict
    result = run(tampered)
    assert not (tmp_path / "MKL-imported").exists(), f"_wif from model-internals.pkl imported ./mkl.py: {result}"
    assert result["ipc_after"] is None and result["threads_after"] == result["threads_before"], result
    assert scan_verdict != "allowed"


def test_methods_fastai_patches_in_from_other_modules_are_seen_by_the_scanner(binary_predictor, internals_of,
                                                                             tmp_path):
    """fastai adds ``fit_one_cycle`` to Learner from fastai.callback.schedule: a fresh scanner process that
    imported only the classes' own modules did not see it as a method, and called the file "loads securely"."""
    tampered = shutil.copytree(binary_predictor, tmp_path / "tampered")
    internals = internals_of(tampered)
    learner = full_pickle_learner(internals)
    learner.__dict__["fit_one_cycle"] = 7
    save_learner(learner, internals)
    # live: loaded the original way, the file's value is what `learner.fit_one_cycle` resolves to
    assert full_pickle_learner(internals).fit_one_cycle == 7
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--json", str(internals)],
                         capture_output=True, text=True, env=env, timeout=300)
    (report,) = json.loads(out.stdout)["files"]
    assert out.returncode != 0 and report["verdict"] != "allowed", report
    assert "fit_one_cycle" in json.dumps(report) and "shadows a method" in json.dumps(report), report
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="fit_one_cycle, which shadows a method"):
        ag_torchfix.load_learner(internals)


# =====================================================================================================
# 3. Strict mode: paths and kinds the dispatch table does not see
# =====================================================================================================

def test_strict_graph_path_as_a_numpy_array_leaves_the_predictor(zoo_copy, tmp_path):
    import numpy as np

    predictor = zoo_copy("zoo-multiclass")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(predictor / "models" / "LightGBM" / "model.pkl", elsewhere / "model.pkl")
    shutil.rmtree(predictor / "models" / "LightGBM")  # the model now only exists outside the predictor
    path = predictor / "models" / "trainer.pkl"
    trainer = load_obj(path)
    trainer.model_graph.nodes["LightGBM"]["path"] = np.array(["..", "..", "elsewhere"])
    dump_obj(trainer, path)
    said_secure = scan_says_secure(predictor / "models" / "trainer.pkl", strict=True)
    err = strict_load_predict(predictor, "LightGBM")
    assert isinstance(err, ag_torchfix.SecureLoadError) and "plain file name" in str(err), (
        f"strict mode loaded models/../../elsewhere/model.pkl (error: {err!r})")
    assert not said_secure


def test_scan_strict_ignores_the_xgboost_model_file(zoo_copy):
    from autogluon.tabular.models.xgboost.xgboost_model import XGBoostModel

    predictor = zoo_copy("zoo-multiclass")
    model_dir = predictor / "models" / "XGBoost"
    ubj = model_dir / "xgb.ubj"
    ubj.write_bytes(ubj.read_bytes()[: len(ubj.read_bytes()) // 2])
    with ag_torchfix.strict(), pytest.raises(ag_torchfix.SecureLoadError, match="XGBoost"):
        XGBoostModel.load(str(model_dir))  # the loader refuses it
    assert not scan_says_secure(model_dir, strict=True), "scan --strict: loads securely; strict load: refused"


# =====================================================================================================
# 4. Files AutoGluon reads outside load_pkl.load (version.txt, metadata.json)
# =====================================================================================================

def test_fifo_version_file_hangs_the_strict_load(binary_copy):
    from autogluon.tabular import TabularPredictor

    fifo = binary_copy / "version.txt"
    version = fifo.read_bytes()
    fifo.unlink()
    os.mkfifo(fifo)
    said_secure = scan_says_secure(binary_copy, strict=True)

    def load():
        with ag_torchfix.strict():
            return TabularPredictor.load(str(binary_copy), verbosity=0)

    thread, result = _run_in_thread(load, timeout=8)
    hung = thread.is_alive()
    _unblock_fifo(fifo, version)
    thread.join(60)
    assert not hung, "TabularPredictor.load (strict) blocked on the version.txt FIFO"
    # strict mode refuses the FIFO (typed); AutoGluon's own version check catches that and carries on without a
    # version, exactly as with a missing version.txt
    assert "error" not in result or isinstance(result["error"], ag_torchfix.SecureLoadError)
    assert not said_secure


RSS_PROBE = textwrap.dedent(
    """
    import sys
    import ag_torchfix
    from autogluon.tabular import TabularPredictor
    print("READY", flush=True)
    with ag_torchfix.strict():
        TabularPredictor.load(sys.argv[1], verbosity=0)
    print("DONE", flush=True)
    """
)


def _rss_mib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def test_version_file_symlinked_to_dev_zero_grows_memory(binary_copy):
    version = binary_copy / "version.txt"
    version.unlink()
    version.symlink_to("/dev/zero")
    said_secure = scan_says_secure(binary_copy, strict=True)
    proc = subprocess.Popen([sys.executable, "-c", RSS_PROBE, str(binary_copy)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        base = _rss_mib(proc.pid)
        peak, deadline = base, time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            peak = max(peak, _rss_mib(proc.pid))
            if peak - base > 600:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert peak - base < 512, f"strict TabularPredictor.load grew by {peak - base} MiB reading version.txt"
    assert not said_secure


def test_metadata_json_not_a_metadata_dict_escapes_untyped(binary_copy):
    (binary_copy / "metadata.json").write_text("{}")
    said_secure = scan_says_secure(binary_copy, strict=True)
    err = strict_load_predict(binary_copy)
    assert err is None or isinstance(err, ag_torchfix.SecureLoadError), f"untyped: {err!r}"
    assert not said_secure or err is None


# =====================================================================================================
# 5. Trust
# =====================================================================================================

def test_a_fifo_lock_file_hangs_a_lock_trusted_load(binary_copy, internals_of, tmp_path, no_force):
    from ag_torchfix.trust import lock

    _, digest, _ = lock.write(str(binary_copy))
    internals = internals_of(binary_copy)
    plant_os_system(internals, tmp_path / "PWNED-lock")  # refused by the secure load -> the lock is consulted
    fifo = internals.parent / "ag_torchfix.lock"
    os.mkfifo(fifo)

    def load():
        with ag_torchfix.trusted(lock=digest):
            return ag_torchfix.load_learner(internals)

    thread, result = _run_in_thread(load, timeout=8)
    hung = thread.is_alive()
    _unblock_fifo(fifo)
    thread.join(60)
    assert not (tmp_path / "PWNED-lock").exists()
    assert not hung, "the lock-trusted load blocked on a FIFO named ag_torchfix.lock"
    assert isinstance(result.get("error"), ag_torchfix.SecureLoadError)


def test_location_trust_judges_the_path_not_the_opened_file(binary_predictor, internals_of, tmp_path, no_force):
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    shutil.copy(internals_of(binary_predictor), trusted_dir / "model-internals.pkl")
    untrusted = tmp_path / "untrusted"
    untrusted.mkdir()
    evil = untrusted / "evil.pkl"
    shutil.copy(internals_of(binary_predictor), evil)
    marker = tmp_path / "PWNED-trust"
    plant_os_system(evil, marker)
    link = untrusted / "model-internals.pkl"
    link.symlink_to(evil)
    with open(link, "rb") as fh:  # what AutoGluon's load_pkl.load_with_fn does before calling the loader
        link.unlink()  # ... the attacker re-points the link while the secure load runs
        link.symlink_to(trusted_dir / "model-internals.pkl")
        with ag_torchfix.trusted(str(trusted_dir)), warnings.catch_warnings():
            warnings.simplefilter("ignore", ag_torchfix.TrustedFallbackWarning)
            try:
                ag_torchfix.load_learner(fh, path=str(link))
            except ag_torchfix.SecureLoadError:
                pass
    assert not marker.exists(), "bytes read from untrusted/evil.pkl were loaded with full pickle"


# =====================================================================================================
# 6. The static pass (fastai internals): differentials tried
# =====================================================================================================

def _storage_pid(numel: int = 20) -> bytes:
    """('storage', FloatStorage, '0', 'cpu', 20): the genuine binary predictor's record data/0 holds 80 bytes."""
    return b"(" + S("storage") + G("torch", "FloatStorage") + S("0") + S("cpu") + I(numel) + b"tQ"


def _rebuild(pid: bytes, offset: int, size: tuple, stride: tuple, hooks: bytes = G("collections", "OrderedDict") + b")R",
             requires_grad: bytes = b"\x89") -> bytes:
    tup = lambda xs: b"(" + b"".join(I(x) for x in xs) + b"t"  # noqa: E731
    return (G("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + I(offset) + tup(size) + tup(stride)
            + requires_grad + hooks + b"tR")


@pytest.fixture
def genuine_internals(binary_predictor, internals_of):
    path = internals_of(binary_predictor)
    assert b"FloatStorage" in data_pkl(path)  # its data/0 record: 20 floats
    return path


@pytest.mark.parametrize("offset,size,stride", [(0, (2,), (-1,)), (-1, (2,), (1,)), (0, (2**30, 2**30), (1, 1)),
                                                (0, (21,), (1,)), (19, (2,), (1,))])
def test_tensor_views_beyond_the_storage_are_typed_errors(offset, size, stride, genuine_internals, tmp_path):
    """Negative strides/offsets, numel overflow and views past the record: torch's set_ checks bounds."""
    path = tmp_path / "model-internals.pkl"
    rewrite_archive(genuine_internals, path, PROTO + _rebuild(_storage_pid(), offset, size, stride) + b".")
    with pytest.raises(ag_torchfix.SecureLoadError):
        ag_torchfix.load_learner(path)


def test_a_storage_key_reused_with_another_dtype_is_a_typed_error(genuine_internals, tmp_path):
    """torch caches storages by key: the second id (ByteStorage, 80 elements) gets the FloatStorage of 20."""
    byte_pid = b"(" + S("storage") + G("torch", "ByteStorage") + S("0") + S("cpu") + I(80) + b"tQ"
    payload = (PROTO + b"(" + _rebuild(_storage_pid(), 0, (20,), (1,)) + _rebuild(byte_pid, 0, (80,), (1,))
               + b"t.")
    path = tmp_path / "model-internals.pkl"
    rewrite_archive(genuine_internals, path, payload)
    with pytest.raises(ag_torchfix.SecureLoadError):  # torch refuses the view (and it is not a Learner anyway)
        ag_torchfix.load_learner(path)
    # both ids match the record's 80 bytes, so the static pass alone passed it; the scanner now runs the loader's
    # own weights-only load into records too (issue 17), and agrees with the loader
    assert scanner.scan_file(str(path)).verdict != "allowed"


def test_backward_hooks_filled_after_the_rebuild_call(genuine_internals, tmp_path):
    hooks = G("collections", "OrderedDict") + b")Rq\x07"  # memoized as 7
    payload = (PROTO + b"(" + _rebuild(_storage_pid(), 0, (20,), (1,), hooks=hooks, requires_grad=b"\x88")
               + b"h\x07" + I(0) + G("builtins", "print") + b"s" + b"t.")
    path = tmp_path / "model-internals.pkl"
    rewrite_archive(genuine_internals, path, payload)
    live = textwrap.dedent(
        """
        import sys, torch
        from ag_torchfix import secure_load, torch_scope
        names = frozenset(secure_load.policy.check_internals(open(sys.argv[1], "rb")).scan.globals)
        torch_scope.patch()
        with torch_scope.active(secure_load._scope_cached(names)):  # the same allowlist, no static pass
            tensor, hooks = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
        print("HOOKS", dict(tensor._backward_hooks))
        (tensor * 2).sum().backward()
        """
    )
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    out = subprocess.run([sys.executable, "-c", live, str(path)], capture_output=True, text=True, env=env, timeout=300)
    assert "built-in function print" in out.stdout  # the hook is live: backward() calls print(grad)
    report = scanner.scan_file(str(path))
    assert any("hook" in c or "OrderedDict" in c for c in report.constructs), report.constructs


def test_python2_names_map_the_same_in_the_scan_and_in_torch(genuine_internals, tmp_path):
    """The scan maps Python-2 names whatever the protocol; so does torch's weights-only unpickler (not only
    for protocol 2): no name differential."""
    payload = b"\x80\x03" + G("__builtin__", "set") + b"]\x85R."
    path = tmp_path / "model-internals.pkl"
    rewrite_archive(genuine_internals, path, payload)
    assert "builtins.set" in {g.name for g in scanner.scan_file(str(path)).globals}
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="not a fastai Learner"):
        ag_torchfix.load_learner(path)  # torch resolved the same name (a set, not a Learner)


def test_crc_is_not_what_torch_reads(genuine_internals, tmp_path):
    """torch does not check record CRCs, ag_torchfix does: an edited data.pkl with a stale CRC is refused."""
    import zipfile

    path = tmp_path / "model-internals.pkl"
    shutil.copy(genuine_internals, path)
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    raw = bytearray(path.read_bytes())
    n, e = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + n + e
    i = raw.index(b"K\x14", start)  # the genuine storage's element count (20): the CRC is now stale
    raw[i + 1] = 0x13
    path.write_bytes(bytes(raw))
    with pytest.raises(ag_torchfix.UnreadableFileError, match="CRC"):
        ag_torchfix.load_learner(path)


# =====================================================================================================
# 7. Files over MAX_IN_MEMORY are read twice (the check, then torch)
# =====================================================================================================

def _with_sparse_padding(src: pathlib.Path, dst: pathlib.Path, pad: int) -> tuple[int, int]:
    """Copy a torch zip archive, adding a stored record 'archive/pad' of ``pad`` bytes as a hole (sparse: no disk
    or time cost).  Returns (offset, size) of data.pkl's bytes in the copy."""
    import zipfile

    raw = src.read_bytes()
    with zipfile.ZipFile(src) as z:
        infos = z.infolist()
        cd_offset = z.start_dir
    prefix = infos[0].filename.split("/")[0]
    data_info = next(i for i in infos if i.filename.endswith("/data.pkl"))
    n, e = struct.unpack("<HH", raw[data_info.header_offset + 26:data_info.header_offset + 30])
    data_offset = data_info.header_offset + 30 + n + e
    name = f"{prefix}/pad".encode()
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, pad, pad, len(name), 0) + name
    cd_end = raw.rindex(b"PK\x05\x06")
    z64 = raw.rfind(b"PK\x06\x06", cd_offset, cd_end)  # torch's zip64 end record and locator: dropped
    central_old = raw[cd_offset:z64 if z64 >= 0 else cd_end]
    entry = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, pad, pad, len(name), 0, 0, 0, 0, 0,
                        cd_offset) + name
    central = central_old + entry
    new_cd_offset = cd_offset + len(local) + pad
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(infos) + 1, len(infos) + 1, len(central), new_cd_offset, 0)
    with open(dst, "wb") as fh:
        fh.write(raw[:cd_offset])
        fh.write(local)
        fh.seek(pad, 1)  # a hole
        fh.write(central)
        fh.write(eocd)
    return data_offset, data_info.file_size


def test_a_large_file_rewritten_after_the_check_skips_the_static_pass(genuine_internals, tmp_path, monkeypatch,
                                                                       capfd):
    from ag_torchfix.policy import verdicts as policy
    from ag_torchfix.load import secure_load

    path = tmp_path / "model-internals.pkl"
    offset, size = _with_sparse_padding(genuine_internals, path, secure_load.MAX_IN_MEMORY + (1 << 20))
    evil = (PROTO + G("fastai.learner", "Recorder") + b")\x81" + b"}" + S("__setstate__") + G("builtins", "print")
            + b"sb" + S("TOCTOU-PLANTED-CALL") + b"b.")
    evil = evil + b"\x00" * (size - len(evil))  # torch stops at STOP; ag_torchfix would refuse the trailing bytes
    original = policy.check_internals

    def check_then_rewrite(stream, *args, **kwargs):
        verdict = original(stream, *args, **kwargs)  # the genuine bytes pass
        with open(path, "r+b") as fh:  # the attacker's write lands between the check and torch.load
            fh.seek(offset)
            fh.write(evil)
        return verdict

    monkeypatch.setattr(policy, "check_internals", check_then_rewrite)
    with pytest.raises(ag_torchfix.SecureLoadError):
        ag_torchfix.load_learner(path)
    assert "TOCTOU-PLANTED-CALL" not in capfd.readouterr().out, "torch ran bytes the static pass never saw"


# =====================================================================================================
# 8. The scanner's own robustness
# =====================================================================================================

def _remove_chain(top: pathlib.Path, depth: int) -> None:
    """Remove top/a/a/.../a without recursion (shutil.rmtree would recurse as deep): lift the chain one level at
    a time."""
    a, b = top / "a", top / "b"
    for _ in range(depth + 1):
        if not a.exists():
            return
        if (a / "a").exists():
            os.rename(a / "a", b)
            os.rmdir(a)
            os.rename(b, a)
        else:
            os.rmdir(a)


def test_scan_survives_a_deep_directory_chain(binary_copy):
    deep = binary_copy / "utils"
    fd = os.open(deep, os.O_RDONLY)
    try:  # mkdir relative to a directory fd: no path grows past PATH_MAX
        for _ in range(1100):
            os.mkdir("a", dir_fd=fd)
            nxt = os.open("a", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    try:
        out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", str(binary_copy)], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"})
    finally:
        _remove_chain(deep, 1100)
    assert "Traceback" not in out.stderr, out.stderr[-600:]
    assert out.returncode in (0, 1, 2, 3)

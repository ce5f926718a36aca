"""``ag-torchfix scan`` and ``doctor`` as users run them: real predictors, tampered copies, bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers import OsSystem, build_on_class_payload, data_pkl, rewrite_archive

ANSI = "\033["


def cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ag_torchfix", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def scan_json(*paths) -> tuple[int, dict]:
    out = cli("scan", "--json", *paths)
    assert out.stderr == "", out.stderr  # never a traceback, and no progress bar when stderr is not a terminal
    return out.returncode, json.loads(out.stdout)


def by_name(doc: dict) -> dict[str, dict]:
    return {os.path.relpath(f["path"], doc["directories"][0]["path"]) if doc["directories"] else f["path"]: f
            for f in doc["files"]}


def test_real_bagged_predictor(predictors):
    code, doc = scan_json(predictors["bagged"])
    assert code == 1 and doc["verdict"] == "needs-trust" and doc["exit_code"] == 1
    files = by_name(doc)
    internals = {k: v for k, v in files.items() if k.endswith("model-internals.pkl")}
    assert len(internals) == 3
    assert all(f["verdict"] == "allowed" and f["covered"] and f["role"] == "fastai-internals" for f in internals.values())
    assert files["models/NeuralNetFastAI_BAG_L1/S1F2/model-internals.pkl"]["model"] == "NeuralNetFastAI_BAG_L1/S1F2"
    assert files["models/NeuralNetFastAI_BAG_L1/utils/oof.pkl"]["model"] == "NeuralNetFastAI_BAG_L1"
    assert files["predictor.pkl"]["model"] == "(predictor)" and files["models/trainer.pkl"]["model"] == "(trainer)"
    assert files["learner.pkl"]["verdict"] == "needs-trust" and not files["learner.pkl"]["covered"]
    (directory,) = doc["directories"]
    assert directory["predictor"] and not directory["loads_securely"] and "learner.pkl" in directory["needs_trust"]


def test_json_schema(binary_predictor, internals_of):
    code, doc = scan_json(internals_of(binary_predictor))
    assert code == 0
    assert set(doc) == {"schema", "version", "strict", "verdict", "exit_code", "summary", "stack_tables", "directories",
                        "files"}
    assert doc["stack_tables"]["stack"].startswith("py") and type(doc["stack_tables"]["measured"]) is bool
    assert doc["schema"] == "ag_torchfix.scan/2" and doc["directories"] == []
    assert doc["summary"] == {"files": 1, "allowed": 1, "needs-trust": 0, "dangerous": 0, "unreadable": 0}
    (f,) = doc["files"]
    assert set(f) == {"path", "model", "kind", "role", "covered", "verdict", "size", "globals", "constructs", "error",
                      "note", "pickles", "trailing"}
    assert f["kind"] == "torch-zip" and f["model"] == "NeuralNetFastAI" and f["size"] > 0
    g = {x["name"]: x for x in f["globals"]}
    assert set(g["fastai.tabular.learner.TabularLearner"]) == {"name", "status", "reason", "uses"}
    assert g["fastai.tabular.learner.TabularLearner"]["status"] == "allowed"
    assert g["builtins.print"]["uses"] == ["referenced"]
    assert g["torch._utils._rebuild_tensor_v2"]["reason"].startswith("a tensor view over a checked storage")


def test_human_report_is_short_and_uncoloured_when_piped(predictors):
    out = cli("scan", predictors["binary"])
    assert out.returncode == 1 and ANSI not in out.stdout and out.stderr == ""
    assert "loads securely" in out.stdout and "(exit 1)" in out.stdout.splitlines()[-1]


def test_tampered_internals_are_dangerous(tampered_predictor, tmp_path):
    code, doc = scan_json(tampered_predictor)
    assert code == 2 and doc["verdict"] == "dangerous"
    f = by_name(doc)["models/NeuralNetFastAI/model-internals.pkl"]
    assert f["verdict"] == "dangerous"
    assert {"name": "posix.system", "status": "dangerous"}.items() <= next(
        g for g in f["globals"] if g["name"] == "posix.system").items()
    assert doc["directories"][0]["dangerous"] == ["models/NeuralNetFastAI/model-internals.pkl"]
    human = cli("scan", tampered_predictor)
    assert human.returncode == 2 and "dangerous: posix.system" in human.stdout
    assert not (tmp_path / "PWNED").exists()


def test_tampered_plain_pickle_is_dangerous(binary_predictor, tmp_path):
    dest = shutil.copytree(binary_predictor, tmp_path / "predictor")
    (dest / "learner.pkl").write_bytes(pickle.dumps(OsSystem(tmp_path / "PWNED"), protocol=4))
    code, doc = scan_json(dest)
    assert code == 2 and by_name(doc)["learner.pkl"]["verdict"] == "dangerous"
    assert not (tmp_path / "PWNED").exists()


def test_unknown_global_needs_trust(binary_predictor, internals_of, tmp_path):
    file = tmp_path / "model-internals.pkl"
    rewrite_archive(internals_of(binary_predictor), file,
                    data_pkl(internals_of(binary_predictor)).replace(b"c__builtin__\nprint\n", b"cdatetime\ntimedelta\n"))
    code, doc = scan_json(file)
    assert code == 1
    assert [g["name"] for g in doc["files"][0]["globals"] if g["status"] == "unknown"] == ["datetime.timedelta"]


def test_refused_constructs_are_reported(binary_predictor, internals_of, tmp_path):
    file = tmp_path / "model-internals.pkl"
    rewrite_archive(internals_of(binary_predictor), file, build_on_class_payload())
    code, doc = scan_json(file)
    assert code == 1
    assert any("BUILD on the class or function object fastai.tabular.core.Categorify" in c
               for c in doc["files"][0]["constructs"])


def _zip_bomb(path):
    """64 MiB of zeros deflated ~1000:1 (torch stores records uncompressed)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x00" * (64 << 20))


@pytest.mark.parametrize("kind, expected", [
    ("empty", "empty file"),
    ("truncated-zip", "not an archive torch would read the same way"),
    ("truncated-pickle", "not a readable pickle"),
    ("unknown-opcode", "unknown opcode 0xff"),
    ("protocol-5-buffers", "out-of-band buffers"),
    ("not-a-pickle", "not a readable pickle"),
    ("zip-bomb", "zip bomb"),
    ("symlink-loop", "symlink loop"),
    ("dangling-symlink", "dangling symlink"),
    ("missing", "cannot read"),
])
def test_bad_input_gets_a_line_and_exit_3(kind, expected, binary_predictor, internals_of, tmp_path):
    path = tmp_path / "model-internals.pkl"
    genuine = internals_of(binary_predictor).read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-zip":
        path.write_bytes(genuine[: len(genuine) // 3])
    elif kind == "truncated-pickle":
        path = tmp_path / "x.pkl"
        path.write_bytes(pickle.dumps({"a": list(range(100))}, protocol=2)[:40])
    elif kind == "unknown-opcode":
        path = tmp_path / "x.pkl"
        path.write_bytes(b"\x80\x02\xff.")
    elif kind == "protocol-5-buffers":
        path = tmp_path / "x.pkl"
        path.write_bytes(pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=lambda b: False))
    elif kind == "not-a-pickle":
        path = tmp_path / "notes.txt"
        path.write_text("hello")
    elif kind == "zip-bomb":
        _zip_bomb(path)
    elif kind == "symlink-loop":
        path = tmp_path / "loop.pkl"
        path.symlink_to(path)
    elif kind == "dangling-symlink":
        path = tmp_path / "dangling.pkl"
        path.symlink_to(tmp_path / "nowhere")
    elif kind == "missing":
        path = tmp_path / "missing.pkl"
    code, doc = scan_json(path)
    assert code == 3, doc
    assert expected in doc["files"][0]["error"], doc["files"][0]
    human = cli("scan", path)
    assert human.returncode == 3 and expected in human.stdout and "Traceback" not in human.stdout + human.stderr


def test_symlink_loops_inside_a_tree_are_reported_not_followed(binary_predictor, tmp_path):
    dest = shutil.copytree(binary_predictor, tmp_path / "predictor")
    (dest / "models" / "loop").symlink_to(dest / "models")  # a directory cycle: not followed
    (dest / "models" / "self.pkl").symlink_to(dest / "models" / "self.pkl")
    code, doc = scan_json(dest)
    assert code == 3
    assert by_name(doc)["models/self.pkl"]["error"] == "cannot read: symlink loop"
    assert not any("/loop/" in f["path"] for f in doc["files"])


def test_danger_outranks_unreadable(tampered_predictor):
    (tampered_predictor / "broken.pkl").write_bytes(b"\x80\x02\xff.")
    code, doc = scan_json(tampered_predictor)
    assert code == 2 and doc["summary"]["unreadable"] == 1 and doc["summary"]["dangerous"] == 1


def test_large_pickle_is_scanned_in_bounded_memory(tmp_path):
    big = tmp_path / "big.pkl"
    with open(big, "wb") as fh:
        pickle.dump([b"x" * (64 << 20) for _ in range(6)], fh, protocol=4)  # ~384 MiB of payload
    probe = ("import sys; from ag_torchfix import scanner; r = scanner.scan_file(sys.argv[1]); "
             "print(r.verdict, next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')))")
    small = tmp_path / "small.pkl"
    small.write_bytes(pickle.dumps([b"x"], protocol=4))
    peaks = {}
    for name, path in (("big", big), ("small", small)):
        out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300)
        verdict, peak = out.stdout.split()
        assert verdict == "allowed", out.stderr  # plain data: no globals at all
        peaks[name] = int(peak)
    assert peaks["big"] - peaks["small"] < 64 * 1024, peaks  # KiB: far less than the 384 MiB payload


def test_doctor_reports_versions_failures_and_coverage():
    out = cli("doctor", "--json", env_extra={"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["versions"]["torch"] and doc["versions"]["autogluon.tabular"] and doc["versions"]["fastai"]
    failures = {f["id"]: f for f in doc["failures"]}
    training, forced, full_pickle = failures["fastai-unscoped"], failures["forced-load"], failures["full-pickle"]
    assert forced["affected"] is True and "covered" in forced["coverage"]
    assert full_pickle["affected"] is True
    fastai = tuple(int(x) for x in doc["versions"]["fastai"].split(".")[:3])
    assert training["affected"] is (fastai <= (2, 7, 18))
    assert doc["trust"]["torch_force_weights_only"] is True
    human = cli("doctor")
    assert human.returncode == 0 and "known failures:" in human.stdout and "start-up hook" in human.stdout


def test_status_command():
    out = cli()
    assert out.returncode == 0 and "active in this process" in out.stdout and "AG_TORCHFIX_TRUST: unset" in out.stdout
    off = cli(env_extra={"AG_TORCHFIX_AUTOLOAD": "0", "AG_TORCHFIX_TRUST": "/models"})
    assert "turned off by AG_TORCHFIX_AUTOLOAD=0" in off.stdout and "files under /models" in off.stdout

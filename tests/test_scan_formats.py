"""``ag-torchfix scan`` as a peer of the pickle scanners (issue 12): every format read exactly, dangers kept past
malformed points, data after STOP reported, names escaped, torch files judged by what torch would do."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys

import pytest
from helpers import G

from ag_torchfix.policy import denylist
from ag_torchfix.cli import scanner


def scan_json(*paths, extra=()):
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--json", *extra, *map(str, paths)],
                         capture_output=True, text=True, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, json.loads(out.stdout)


def call(module: str, name: str, arg: str = "id") -> bytes:
    text = arg.encode()
    return b"\x80\x02" + G(module, name) + b"X" + len(text).to_bytes(4, "little") + text + b"\x85R."


# one sample per category of the catalogue, and the names the issue found missed
DANGEROUS = ["posix.system", "subprocess.Popen", "builtins.eval", "builtins.exec", "importlib.import_module",
             "cProfile.run", "profile.run", "timeit.timeit", "pdb.run", "bdb.Bdb.run", "trace.Trace.run", "pip.main",
             "ensurepip._run_pip", "venv.create", "pkgutil.resolve_name", "pydoc.pipepager",
             "uuid._get_command_stdout", "imaplib.IMAP4_stream", "urllib.request.urlopen", "requests.api.get",
             "http.client.HTTPSConnection", "aiohttp.client.ClientSession", "torch.utils.collect_env.run",
             "torch.load", "pickle.loads", "shutil.rmtree", "socket.create_connection", "ctypes.CDLL",
             "fastai.learner.load_learner", "autogluon.common.loaders.load_pkl.load"]


@pytest.mark.parametrize("name", DANGEROUS)
def test_known_code_execution_functions_are_dangerous(name, tmp_path):
    module, _, attr = name.rpartition(".")
    if "." in attr:
        module, attr = name.split(".", 1)
    path = tmp_path / "x.pkl"
    # dotted qualified names (bdb.Bdb.run) need STACK_GLOBAL, as protocol 4 writes them
    path.write_bytes(b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(attr)])
                     + attr.encode() + b"\x93X\x02\x00\x00\x00id\x85R.")
    report = scanner.scan_file(str(path))
    assert report.verdict == "dangerous", (name, report)
    assert denylist.lookup(name) is not None


def test_benign_lookalikes_are_not_dangerous(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([len, dict, print, io.BytesIO.__name__], protocol=4))
    report = scanner.scan_file(str(path))
    assert report.verdict == "needs-trust" and not [g for g in report.globals if g.status == "dangerous"]


def test_legacy_torch_files_are_read_pickle_by_pickle(tmp_path):
    import torch

    genuine = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, genuine, _use_new_zipfile_serialization=False)
    report = scanner.scan_file(str(genuine))
    assert report.kind == "torch-legacy" and report.pickles == 5 and report.error is None
    assert report.verdict == "allowed"  # torch's own weights-only load takes it

    class System:
        def __reduce__(self):
            return os.system, ("id",)

    evil = tmp_path / "evil.pt"
    torch.save(System(), evil, _use_new_zipfile_serialization=False)
    assert scanner.scan_file(str(evil)).verdict == "dangerous"


def test_a_danger_before_a_malformed_point_wins(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(call("posix", "system")[:-1] + b"h\x07.")  # then a memo key never written
    report = scanner.scan_file(str(path))
    assert report.verdict == "dangerous" and "memo key 7" in report.error


def test_a_pickle_appended_after_stop_is_scanned(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"genuine": 1}, protocol=2) + call("posix", "system"))
    report = scanner.scan_file(str(path))
    assert report.pickles == 2 and report.verdict == "dangerous"
    garbage = tmp_path / "y.pkl"
    garbage.write_bytes(pickle.dumps({"genuine": 1}, protocol=2) + b"\x00\x01 not a pickle")
    report = scanner.scan_file(str(garbage))
    assert report.trailing is not None and report.verdict == "needs-trust"
    assert any("after the last pickle" in c for c in report.constructs)


def test_names_with_control_characters_never_reach_the_terminal_raw(tmp_path):
    path = tmp_path / "evil\x1b[2Jname.pkl"
    path.write_bytes(b"\x80\x02" + G("posix", "sys\x1b]0;x\x07tem") + b"N.")
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", str(path)], capture_output=True, text=True,
                         timeout=300)
    assert "\x1b" not in out.stdout and "\\x1b" in out.stdout


def test_general_torch_files_get_torchs_own_verdict(tmp_path):
    import collections
    import datetime

    import torch

    state = tmp_path / "state.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, state)
    report = scanner.scan_file(str(state))
    assert report.verdict == "allowed" and "torch's weights-only default" in report.note
    custom = tmp_path / "custom.pt"
    torch.save({"c": collections.Counter(a=1), "d": datetime.date(2020, 1, 1)}, custom)
    report = scanner.scan_file(str(custom))
    assert report.verdict == "needs-trust" and "datetime.date" in report.note
    assert "add_safe_globals" in report.note


def test_verdicts_are_stable_across_runs(predictors):
    first = scan_json(predictors["bagged"])
    second = scan_json(predictors["bagged"])
    assert first == second


def test_scanning_does_not_import_torch_for_plain_pickles(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    code = ("import sys; from ag_torchfix import cli; rc = cli.main(['scan', sys.argv[1]]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH", out.stdout + out.stderr

"""Issue 17, item 3: the scanner judges by role, as the loader does.

AutoGluon hands ``models/<model>/model-internals.pkl`` to the secure loader whatever it holds, so ``ag-torchfix scan``
gives that file exactly the loader's verdict: a plain, gzip or legacy pickle there is unreadable to the loader (the
scanner routed it by content and called plain data allowed), a file over the loader's in-memory limit is refused
(only trust loads it), and a directory, FIFO or device where AutoGluon reads a file, or a symlinked model directory,
is reported by ``scan`` and ``scan --strict`` (never skipped, never exit 0).
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
import sys

import pytest
from helpers import OsSystem

import ag_torchfix
from ag_torchfix.cli import scanner
from ag_torchfix.load import secure_load


@pytest.fixture
def predictor(binary_predictor, tmp_path):
    return shutil.copytree(binary_predictor, tmp_path / "predictor")


def internals(predictor):
    return next(predictor.rglob("model-internals.pkl"))


def entry(report, path):
    (found,) = [f for f in report.files if f.path == str(path)]
    return found


def both_modes(predictor, path, verdict: str, match: str):
    """``scan`` and ``scan --strict`` of the predictor report ``path`` with ``verdict`` and do not exit 0."""
    for strict in (False, True):
        report = scanner.scan_paths([str(predictor)], strict=strict)
        found = entry(report, path)
        assert found.verdict == verdict and match in (found.error or ""), (strict, found)
        assert report.exit_code != 0 and not report.directories[0].loads_securely


def _legacy(path):
    import torch

    torch.save({"weight": torch.zeros(3)}, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("content", ["plain", "gzip", "legacy"])
def test_internals_that_are_not_a_torch_zip_get_the_loaders_verdict(content, predictor):
    path = internals(predictor)
    data = pickle.dumps({"weights": [0.5, 1.5], "classes": ["no", "yes"]}, protocol=2)  # plain data: no globals
    if content == "legacy":
        _legacy(path)
    else:
        path.write_bytes(gzip.compress(data) if content == "gzip" else data)
    with pytest.raises(ag_torchfix.UnreadableFileError):
        ag_torchfix.load_learner(path)
    report = scanner.scan_file(str(path))
    assert (report.verdict, report.role, report.covered) == ("unreadable", "fastai-internals", True), report
    assert "secure loader" in report.error
    both_modes(predictor, path, "unreadable", "secure loader")


def test_a_dangerous_plain_pickle_as_internals_is_still_reported_dangerous(predictor, tmp_path):
    path = internals(predictor)
    path.write_bytes(gzip.compress(pickle.dumps(OsSystem(tmp_path / "PWNED"), protocol=2)))
    with pytest.raises(ag_torchfix.UnreadableFileError):
        ag_torchfix.load_learner(path)
    assert scanner.scan_file(str(path)).verdict == "dangerous"
    assert not (tmp_path / "PWNED").exists()


def test_internals_over_the_loaders_size_limit_are_not_allowed(predictor):
    path = internals(predictor)
    with open(path, "r+b") as fh:
        fh.truncate(secure_load.MAX_IN_MEMORY + 1)  # sparse: nothing is written
    with pytest.raises(ag_torchfix.SecureLoadError, match="larger than"):
        ag_torchfix.load_learner(path)
    report = scanner.scan_file(str(path))
    assert report.verdict == "needs-trust" and "larger than" in report.error, report
    both_modes(predictor, path, "needs-trust", "larger than")


def test_a_directory_in_place_of_the_internals_is_reported(predictor):
    path = internals(predictor)
    path.unlink()
    path.mkdir()
    (path / "data.pkl").write_bytes(b"\x80\x02N.")
    with pytest.raises(ag_torchfix.UnreadableFileError):
        ag_torchfix.load_learner(path)
    assert scanner.scan_file(str(path)).verdict == "unreadable"
    both_modes(predictor, path, "unreadable", "a directory where AutoGluon reads a file")


def test_a_symlinked_model_directory_is_reported_not_skipped(predictor, tmp_path):
    model_dir = internals(predictor).parent
    elsewhere = tmp_path / "elsewhere"
    shutil.move(model_dir, elsewhere)
    model_dir.symlink_to(elsewhere, target_is_directory=True)
    both_modes(predictor, model_dir, "unreadable", "symlinked directory")
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", str(predictor)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3 and "symlinked directory" in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_where_autogluon_reads_is_reported(kind, predictor):
    path = internals(predictor)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(ag_torchfix.UnreadableFileError):
        ag_torchfix.load_learner(path)
    both_modes(predictor, path, "unreadable", "not a regular file")
    other = predictor / "models" / "notes"  # a name AutoGluon does not read: reported all the same
    os.mkfifo(other)
    assert entry(scanner.scan_paths([str(predictor)]), other).verdict == "unreadable"

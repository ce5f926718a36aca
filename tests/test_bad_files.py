"""Empty, truncated, corrupt, non-zip, legacy and odd files: one error family, clear messages, no fallback."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
from helpers import data_pkl, rewrite_archive

import ag_torchfix


def _variants(genuine: bytes, tmp_path):
    import torch

    legacy = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    corrupt = bytearray(genuine)
    start = genuine.index(b"data.pkl") + 200  # inside the pickle record: its CRC no longer matches
    corrupt[start:start + 64] = b"\xff" * 64
    no_pickle = io.BytesIO()
    with zipfile.ZipFile(no_pickle, "w") as z:
        z.writestr("archive/version", b"3\n")
    script = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), script)
    return {
        "empty": (b"", "the file is empty"),
        "truncated": (genuine[: len(genuine) // 2], "not an archive torch would read the same way"),
        "corrupt": (bytes(corrupt), "fails its CRC check"),
        "not-zip": (b"hello, this is not a model" * 10, "not a torch zip archive"),
        "legacy-format": (legacy.getvalue(), "legacy (non-zip) format"),
        "plain-pickle": (pickle.dumps({"a": 1}, protocol=2), "legacy (non-zip) format or is a plain pickle"),
        "zip-without-data.pkl": (no_pickle.getvalue(), "without a data.pkl record"),
        "torchscript": (script.getvalue(), "TorchScript archive"),
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "corrupt", "not-zip", "legacy-format", "plain-pickle",
                                  "zip-without-data.pkl", "torchscript"])
def test_unreadable_files_get_the_error_family_and_never_fall_back(kind, binary_predictor, internals_of, tmp_path,
                                                                   no_force):
    genuine = internals_of(binary_predictor).read_bytes()
    content, expected = _variants(genuine, tmp_path)[kind]
    file = tmp_path / "model-internals.pkl"
    file.write_bytes(content)
    with ag_torchfix.trusted():  # trust does not turn a broken file into a full-pickle load
        with pytest.raises(ag_torchfix.UnreadableFileError) as err:
            ag_torchfix.load_learner(file)
    assert isinstance(err.value, pickle.UnpicklingError)
    assert expected in str(err.value) and str(file) in str(err.value)


@pytest.mark.parametrize("cut", [1, 100, 1000, -1])
def test_truncated_pickle_stream_is_unreadable(cut, binary_predictor, internals_of, tmp_path):
    file = internals_of(binary_predictor)
    payload = data_pkl(file)
    bad = tmp_path / "model-internals.pkl"
    rewrite_archive(file, bad, payload[:cut] if cut > 0 else payload[:-1])
    with pytest.raises(ag_torchfix.UnreadableFileError, match="pickle is unreadable"):
        ag_torchfix.load_learner(bad)


def test_a_non_learner_object_is_refused(binary_predictor, internals_of, tmp_path):
    import torch

    bad = tmp_path / "model-internals.pkl"
    torch.save({"just": torch.ones(3)}, bad)
    with pytest.raises(ag_torchfix.SecureLoadError, match="not a fastai Learner"):
        ag_torchfix.load_learner(bad)


def test_duplicate_data_pkl_records_are_refused(binary_predictor, internals_of, tmp_path):
    """A zip with two data.pkl records could show the scanner one and torch the other."""
    file = internals_of(binary_predictor)
    bad = tmp_path / "model-internals.pkl"
    bad.write_bytes(file.read_bytes())
    with zipfile.ZipFile(bad, "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("archive/data.pkl", b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R.")
    with pytest.raises(ag_torchfix.UnreadableFileError, match="two records named 'archive/data.pkl'"):
        ag_torchfix.load_learner(bad)


@pytest.mark.parametrize("bad", [123, None, b"bytes are not a file"])
def test_wrong_argument_types_get_a_typed_error(bad):
    with pytest.raises(TypeError, match="expects a path or a binary file object"):
        ag_torchfix.load_learner(bad)

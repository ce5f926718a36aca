"""Writer spellings (issue 16): what a genuine writer may write is accepted, nothing next to it is.

CPython 3.11.0-3.11.4 pickle an enum member as ``getattr(cls, 'NAME')``; CPython 3.13 names paths
``pathlib._local.PosixPath``.  The golden predictors (test_goldens.py) prove the genuine spellings load; these
tests try what an attacker would put next to them: other attributes through the enum spelling, other classes,
values no writer writes, and the new path name used where no path may go.  Each is refused by the loader and by the
scanner (the static check), and by the getattr shim itself (the run-time layer under torch).
"""

from __future__ import annotations

import inspect
import pickle

import pytest
from helpers import G, PROTO, S, rewrite_archive

import ag_torchfix
from ag_torchfix.policy import allowlist, shims, verdicts as policy
from ag_torchfix.cli import scanner


@pytest.fixture
def genuine(binary_predictor, internals_of):
    return internals_of(binary_predictor)


def archive_with(genuine, tmp_path, payload: bytes):
    path = tmp_path / "model-internals.pkl"
    rewrite_archive(genuine, path, payload)
    return path


def verdict(path):
    with open(path, "rb") as fh:
        return policy.check_internals(fh).judgement


def enum_by_name(member: str, cls=("inspect", "_ParameterKind")) -> bytes:
    return G("builtins", "getattr") + G(*cls) + S(member) + b"\x86R"


def parameter(kind: bytes) -> bytes:
    return G("inspect", "Parameter") + S("args") + kind + b"\x86R"


def test_enum_members_table_is_exactly_the_real_members():
    """The data table is checked against the running Python's enum: a renamed or added member fails here."""
    for cls_name, (members, _reason) in allowlist.ENUM_MEMBERS.items():
        cls = shims.resolve(cls_name)
        assert tuple(cls._member_names_) == members
    assert [m.value for m in inspect._ParameterKind] == [0, 1, 2, 3, 4]


def test_parameter_kind_by_name_and_by_value_are_both_accepted(genuine, tmp_path):
    for kind in (enum_by_name("VAR_POSITIONAL"), G("inspect", "_ParameterKind") + b"K\x02\x85R"):
        judgement = verdict(archive_with(genuine, tmp_path, PROTO + parameter(kind) + b"."))
        assert judgement.ok, judgement.constructs


@pytest.mark.parametrize("member", ["__class__", "__new__", "from_bytes", "_missing_", "description", "mro",
                                    "var_positional", "VAR_POSITIONAL ", "_member_map_"])
def test_other_attributes_through_the_enum_spelling_are_refused(genuine, tmp_path, member):
    path = archive_with(genuine, tmp_path, PROTO + enum_by_name(member) + b".")
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match="builtins.getattr called with arguments"):
        ag_torchfix.load_learner(path)
    assert scanner.scan_file(str(path)).verdict != scanner.ALLOWED
    with pytest.raises(pickle.UnpicklingError):  # and the shim under torch refuses it on its own
        shims.pickled_getattr(inspect._ParameterKind, member)


def test_member_names_of_other_classes_are_refused(genuine, tmp_path):
    for cls in (("fastai.learner", "Recorder"), ("pathlib", "PosixPath"), ("builtins", "int")):
        judgement = verdict(archive_with(genuine, tmp_path, PROTO + enum_by_name("VAR_POSITIONAL", cls) + b"."))
        assert any("builtins.getattr called with arguments" in c for c in judgement.constructs), judgement.constructs
    with pytest.raises(pickle.UnpicklingError):
        shims.pickled_getattr(int, "VAR_POSITIONAL")


def test_getattr_with_a_default_or_a_computed_name_is_refused(genuine, tmp_path):
    payloads = [
        G("builtins", "getattr") + G("inspect", "_ParameterKind") + S("VAR_POSITIONAL") + b"N\x87R",
        G("builtins", "getattr") + G("inspect", "_ParameterKind") + G("builtins", "str") + b"\x86R",
    ]
    for payload in payloads:
        judgement = verdict(archive_with(genuine, tmp_path, PROTO + payload + b"."))
        assert not judgement.ok
    with pytest.raises(pickle.UnpicklingError):
        shims.pickled_getattr(inspect._ParameterKind, "VAR_POSITIONAL", None)


def test_parameter_kind_values_no_writer_writes_are_refused(genuine, tmp_path):
    for value in (b"K\x05", b"J\xff\xff\xff\xff"):
        payload = PROTO + parameter(G("inspect", "_ParameterKind") + value + b"\x85R") + b"."
        judgement = verdict(archive_with(genuine, tmp_path, payload))
        assert any("_ParameterKind called with arguments" in c for c in judgement.constructs), judgement.constructs


def test_python313_path_spelling_is_the_path_entry_and_nothing_more(genuine, tmp_path):
    ok = PROTO + G("pathlib._local", "PosixPath") + S("/a/b") + b"\x85R."
    judgement = verdict(archive_with(genuine, tmp_path, ok))
    assert judgement.ok, judgement.constructs
    assert "CPython >= 3.13" in judgement.globals["pathlib._local.PosixPath"][1]
    bad = {
        "arguments": PROTO + G("pathlib._local", "PosixPath") + G("builtins", "print") + b"\x85R.",
        "BUILD": PROTO + G("pathlib._local", "PosixPath") + S("/a") + b"\x85R}" + S("_raw_paths") + S("x") + b"sb.",
        "Windows arguments": PROTO + G("pathlib._local", "WindowsPath") + b"K\x01\x85R.",
    }
    for what, payload in bad.items():
        path = archive_with(genuine, tmp_path, payload)
        judgement = verdict(path)
        assert not judgement.ok, what
        with pytest.raises(ag_torchfix.DisallowedGlobalsError):
            ag_torchfix.load_learner(path)


def test_aliases_name_allowlisted_entries_only():
    every = {e.name for e in allowlist.FASTAI_INTERNALS} | set(allowlist.SHIMS)
    for alias, (name, reason) in allowlist.ALIASES.items():
        assert name in every and alias not in every and reason

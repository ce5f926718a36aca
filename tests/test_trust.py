"""Trust: full pickle only for trusted files, only after the secure load failed, never when forced."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
from helpers import data_pkl, rewrite_archive

import ag_torchfix
from ag_torchfix.trust import rules as trust


@pytest.fixture
def unknown_global_file(binary_predictor, internals_of, tmp_path):
    """A genuine learner whose stream references one harmless global outside the allowlist."""
    predictor = shutil.copytree(binary_predictor, tmp_path / "predictor")
    file = internals_of(predictor)
    # the learner's logger (builtins.print) becomes datetime.timedelta: harmless, but not allowlisted
    payload = data_pkl(file).replace(b"c__builtin__\nprint\n", b"cdatetime\ntimedelta\n", 1)
    assert b"cdatetime\ntimedelta\n" in payload
    rewrite_archive(file, file, payload)
    return file


def _load(file):
    return ag_torchfix.load_learner(file)


def test_untrusted_unknown_global_is_refused(unknown_global_file, no_force):
    with pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        _load(unknown_global_file)
    assert err.value.globals == ["datetime.timedelta"]


def test_trusted_context_falls_back_with_a_warning_naming_the_globals(unknown_global_file, no_force):
    with ag_torchfix.trusted(), pytest.warns(ag_torchfix.TrustedFallbackWarning, match="datetime.timedelta"):
        learner = _load(unknown_global_file)
    import datetime

    assert learner.logger is datetime.timedelta


def test_trusted_paths_cover_only_those_paths(unknown_global_file, tmp_path, no_force):
    predictor_dir = unknown_global_file.parents[2]
    with ag_torchfix.trusted(tmp_path / "elsewhere"), pytest.raises(ag_torchfix.DisallowedGlobalsError):
        _load(unknown_global_file)
    with ag_torchfix.trusted(predictor_dir), pytest.warns(ag_torchfix.TrustedFallbackWarning):
        _load(unknown_global_file)
    with ag_torchfix.trusted(unknown_global_file), pytest.warns(ag_torchfix.TrustedFallbackWarning):
        _load(unknown_global_file)


def test_symlink_out_of_a_trusted_directory_is_not_trusted(unknown_global_file, tmp_path, no_force):
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    link = trusted_dir / "model-internals.pkl"
    link.symlink_to(unknown_global_file)
    with ag_torchfix.trusted(trusted_dir), pytest.raises(ag_torchfix.DisallowedGlobalsError):
        _load(link)


def test_trust_is_scoped_to_the_block(unknown_global_file, no_force):
    with ag_torchfix.trusted():
        pass
    with pytest.raises(ag_torchfix.DisallowedGlobalsError):
        _load(unknown_global_file)


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " on "])
def test_env_values_that_trust_everything(value, unknown_global_file, monkeypatch, no_force):
    monkeypatch.setenv("AG_TORCHFIX_TRUST", value)
    with pytest.warns(ag_torchfix.TrustedFallbackWarning, match="AG_TORCHFIX_TRUST"):
        _load(unknown_global_file)


@pytest.mark.parametrize("value", ["", "0", "false", "No", "OFF"])
def test_env_values_that_trust_nothing(value, unknown_global_file, monkeypatch, no_force):
    monkeypatch.setenv("AG_TORCHFIX_TRUST", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ag_torchfix.DisallowedGlobalsError):
            _load(unknown_global_file)


def test_env_path_list(unknown_global_file, tmp_path, monkeypatch, no_force):
    predictor_dir = unknown_global_file.parents[2]
    monkeypatch.setenv("AG_TORCHFIX_TRUST", os.pathsep.join([str(tmp_path / "x"), str(predictor_dir)]))
    with pytest.warns(ag_torchfix.TrustedFallbackWarning):
        _load(unknown_global_file)
    monkeypatch.setenv("AG_TORCHFIX_TRUST", str(tmp_path / "x"))
    with pytest.raises(ag_torchfix.DisallowedGlobalsError):
        _load(unknown_global_file)


@pytest.mark.parametrize("value", ["maybe", "relative/dir", "2"])
def test_env_invalid_value_trusts_nothing_and_warns_once(value, unknown_global_file, monkeypatch, no_force):
    monkeypatch.setenv("AG_TORCHFIX_TRUST", value)
    trust._warned_values.discard(value)
    with pytest.warns(ag_torchfix.ConfigurationWarning, match="not understood"):
        with pytest.raises(ag_torchfix.DisallowedGlobalsError):
            _load(unknown_global_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ag_torchfix.DisallowedGlobalsError):
            _load(unknown_global_file)


def test_platform_force_flag_wins_over_trust(unknown_global_file, monkeypatch, force):
    monkeypatch.setenv("AG_TORCHFIX_TRUST", "1")
    with ag_torchfix.trusted(), pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        _load(unknown_global_file)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set: the platform setting wins" in str(err.value)


def test_secure_load_is_tried_first_even_when_trusted(binary_predictor, internals_of, no_force):
    with ag_torchfix.trusted(), warnings.catch_warnings():
        warnings.simplefilter("error", ag_torchfix.TrustedFallbackWarning)
        assert type(_load(internals_of(binary_predictor))).__name__ == "TabularLearner"


def test_trusted_predictor_loads_through_autogluon(unknown_global_file, no_force):
    from autogluon.tabular import TabularPredictor
    from helpers import make_table

    predictor_dir = unknown_global_file.parents[2]
    data = make_table(10, "binary").drop(columns=["label"])
    with pytest.raises(ag_torchfix.DisallowedGlobalsError):
        TabularPredictor.load(str(predictor_dir), verbosity=0).predict(data)
    with ag_torchfix.trusted(predictor_dir), pytest.warns(ag_torchfix.TrustedFallbackWarning):
        assert len(TabularPredictor.load(str(predictor_dir), verbosity=0).predict(data)) == 10


# --- issue 10: bypasses -------------------------------------------------------------------------------

def test_a_path_containing_scheme_separator_is_normalised_not_trusted(unknown_global_file, tmp_path, monkeypatch,
                                                                         no_force):
    """'://' anywhere in a path used to skip normalisation: /srv/trusted/../victim/evil/s3://x/... counted as under
    /srv/trusted.  Only a leading s3:// is a URL; everything else is resolved before comparing."""
    trusted_dir = tmp_path / "trusted"
    trusted_dir.mkdir()
    victim = tmp_path / "victim" / "evil" / "s3:" / "x"
    victim.mkdir(parents=True)
    target = victim / "model-internals.pkl"
    shutil.copy(unknown_global_file, target)
    sneaky = f"{trusted_dir}/../victim/evil/s3://x/model-internals.pkl"
    assert os.path.samefile(sneaky, target)
    monkeypatch.setenv("AG_TORCHFIX_TRUST", str(trusted_dir))
    assert trust.trust_source(sneaky) is None
    with pytest.raises(ag_torchfix.DisallowedGlobalsError):
        ag_torchfix.load_learner(target, path=sneaky)
    assert not trust.under(trust.normalise("s3://bucket/a"), trust.normalise("/s3:"))
    assert not trust.under(trust.normalise("/srv/trusted-evil/x"), trust.normalise("/srv/trusted"))
    assert trust.under(trust.normalise("s3://bucket/a/b.pkl"), trust.normalise("s3://bucket/a/"))


def test_env_entries_keep_s3_prefixes_and_lock_digests_whole(monkeypatch, tmp_path):
    digest = "sha256:" + "ab" * 32
    monkeypatch.setenv("AG_TORCHFIX_TRUST", os.pathsep.join(["s3://bucket/models", str(tmp_path), digest]))
    env = trust.env_trust()
    assert env.kind == "entries" and env.prefixes == ("s3://bucket/models", str(tmp_path.resolve()))
    assert env.locks == ("ab" * 32,)


def test_strict_mode_fallback_obeys_the_force_flag(zoo_predictors, tmp_path, monkeypatch, force):
    import collections
    import pickle

    from autogluon.tabular import TabularPredictor

    dest = shutil.copytree(zoo_predictors["zoo-multiclass"], tmp_path / "p")
    with open(dest / "learner.pkl", "rb") as fh:
        learner = pickle.load(fh)
    learner.note = collections.Counter  # harmless, not in the strict allowlist
    with open(dest / "learner.pkl", "wb") as fh:
        pickle.dump(learner, fh, protocol=4)
    monkeypatch.setenv("AG_TORCHFIX_TRUST", "1")
    with ag_torchfix.strict(), ag_torchfix.trusted(), pytest.raises(ag_torchfix.DisallowedGlobalsError) as err:
        TabularPredictor.load(str(dest), verbosity=0)
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set" in str(err.value)


def test_trust_ends_with_its_block_for_tasks_created_inside(unknown_global_file, no_force):
    import asyncio
    import contextvars

    async def main():
        with ag_torchfix.trusted():
            task = asyncio.ensure_future(asyncio.sleep(0.01, result=None))
            late = asyncio.get_running_loop().create_task(_later())
            context = contextvars.copy_context()
        await task
        return await late, context.run(trust.trust_source, str(unknown_global_file))

    async def _later():
        await asyncio.sleep(0.02)  # runs after the block has exited, in a copy of its context
        return trust.trust_source(str(unknown_global_file))

    later, copied = asyncio.run(main())
    assert later is None and copied is None


def test_a_generator_yielding_inside_the_block_is_documented_not_hidden(unknown_global_file, no_force):
    """A generator that yields inside trusted() carries trust to its caller until it resumes (README)."""
    def gen():
        with ag_torchfix.trusted():
            yield trust.trust_source(str(unknown_global_file))

    it = gen()
    assert next(it) == "ag_torchfix.trusted()"
    assert trust.trust_source(str(unknown_global_file)) == "ag_torchfix.trusted()"  # the caller, while suspended
    it.close()
    assert trust.trust_source(str(unknown_global_file)) is None


# --- issue 10: content-bound trust (lock / verify) ---------------------------------------------------

def cli(*args, env_extra=None):
    import subprocess
    import sys

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ag_torchfix", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture
def locked(unknown_global_file):
    predictor = unknown_global_file.parents[2]
    out = cli("lock", predictor)
    assert out.returncode == 0, out.stderr
    digest = out.stdout.strip().splitlines()[-1]
    assert digest.startswith("sha256:") and len(digest) == 71
    return predictor, unknown_global_file, digest


def test_a_locked_predictor_loads_with_its_digest_and_one_changed_byte_is_refused(locked, monkeypatch, no_force):
    predictor, file, digest = locked
    assert cli("verify", predictor).returncode == 0
    monkeypatch.setenv("AG_TORCHFIX_TRUST", digest)
    with pytest.warns(ag_torchfix.TrustedFallbackWarning, match="matches"):
        _load(file)
    with ag_torchfix.trusted(lock=digest), pytest.warns(ag_torchfix.TrustedFallbackWarning):
        monkeypatch.delenv("AG_TORCHFIX_TRUST")
        _load(file)
    monkeypatch.setenv("AG_TORCHFIX_TRUST", digest)
    data = bytearray(file.read_bytes())
    data[-30] ^= 1  # one byte of the archive's end record area
    file.write_bytes(bytes(data))
    with pytest.raises((ag_torchfix.LockMismatchError, ag_torchfix.UnreadableFileError)) as err:
        _load(file)
    if isinstance(err.value, ag_torchfix.LockMismatchError):
        assert "expected sha256:" in str(err.value) and "got sha256:" in str(err.value)
    assert cli("verify", predictor).returncode == 2


def test_lock_mismatch_names_file_and_digests(locked, monkeypatch, no_force):
    predictor, file, digest = locked
    payload = data_pkl(file).replace(b"cdatetime\ntimedelta\n", b"cdatetime\ntimezone\n", 1)
    rewrite_archive(file, file, payload)  # still refused by the secure load; now not the locked bytes either
    monkeypatch.setenv("AG_TORCHFIX_TRUST", digest)
    with pytest.raises(ag_torchfix.LockMismatchError) as err:
        _load(file)
    assert "model-internals.pkl" in str(err.value) and err.value.expected != err.value.actual


def test_the_hash_is_of_the_bytes_loaded(locked, monkeypatch, no_force):
    """Lock trust hands the fallback the very bytes it hashed: a file swapped after the check is never read."""
    from ag_torchfix.trust import fallback

    predictor, file, digest = locked
    monkeypatch.setenv("AG_TORCHFIX_TRUST", digest)
    genuine = file.read_bytes()
    calls = []

    def read(limit):
        calls.append(limit)
        return genuine[:limit]

    err = ag_torchfix.DisallowedGlobalsError(["datetime.timedelta"], [], path=str(file))
    with pytest.warns(ag_torchfix.TrustedFallbackWarning):
        door = fallback.open_door(err, str(file), read, what="secure load")
    assert door.data == genuine and calls == [len(genuine) + 1]


@pytest.mark.parametrize("change", ["tampered", "added", "removed", "renamed", "symlinked", "lock-edited",
                                    "wrong-digest", "no-lock"])
def test_verify_and_lock_trust_failure_modes(change, locked, tmp_path, monkeypatch, no_force):
    import json

    predictor, file, digest = locked
    lock_path = predictor / "ag_torchfix.lock"
    expected_exit = 2
    if change == "tampered":
        (predictor / "learner.pkl").write_bytes((predictor / "learner.pkl").read_bytes() + b"\0")
    elif change == "added":
        (predictor / "models" / "extra.pkl").write_bytes(b"\x80\x04N.")
    elif change == "removed":
        (predictor / "learner.pkl").unlink()
    elif change == "renamed":
        (predictor / "learner.pkl").rename(predictor / "learner2.pkl")
    elif change == "symlinked":
        target = tmp_path / "elsewhere.pkl"
        target.write_bytes((predictor / "learner.pkl").read_bytes())
        (predictor / "learner.pkl").unlink()
        (predictor / "learner.pkl").symlink_to(target)
    elif change == "lock-edited":
        doc = json.loads(lock_path.read_text())
        doc["files"][str(file.relative_to(predictor))]["sha256"] = "0" * 64
        lock_path.write_text(json.dumps(doc))
        expected_exit = 2
    elif change == "wrong-digest":
        digest = "sha256:" + "0" * 64
        expected_exit = 0
    elif change == "no-lock":
        lock_path.unlink()
        expected_exit = 3
    out = cli("verify", "--json", predictor)
    assert out.returncode == expected_exit, out.stdout
    if change != "lock-edited":
        doc = json.loads(out.stdout)
        assert doc["exit_code"] == expected_exit
    monkeypatch.setenv("AG_TORCHFIX_TRUST", digest)
    if change in ("lock-edited", "wrong-digest", "no-lock"):  # the digest no longer names this lock
        with pytest.raises(ag_torchfix.DisallowedGlobalsError):
            _load(file)


@pytest.mark.parametrize("path", [
    "s3://bucket/p/model.pkl", "s3a://bucket/p", "s3n://b/x", "s3:/bucket", "s3bucket/x", "https://host/x.pkl",
    "http://host", "https:///no-host", "ftp://host/x", "file:///tmp/x", "dir/evil://x", "a://b", "/abs/path",
    "relative/path", "S3://upper", "", "http://[::1", "s3"])
def test_remote_is_decided_as_autogluon_decides_it(path):
    """trust.remote_kind (used by trust, strict mode's loader and its text readers) against AutoGluon's own
    functions: a path is remote exactly where AutoGluon's load_pkl reads it remotely (issue 18: 'a://b' went to
    AutoGluon's full-pickle loader as if it were a URL)."""
    from autogluon.common.loaders import load_pkl
    from autogluon.common.utils import s3_utils

    web = getattr(load_pkl, "_is_web_url", None)
    expected = "s3" if s3_utils.is_s3_url(path) else ("url" if web is not None and web(path) else None)
    if web is None and trust.remote_kind(path) == "url":
        pytest.skip("this AutoGluon has no web-URL branch (strict mode treats such paths as local there)")
    assert trust.remote_kind(path) == expected

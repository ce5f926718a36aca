"""Trust: full pickle only for trusted files, only after the secure load failed, never when forced."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
from helpers import data_pkl, rewrite_archive

import ag_torchfix
from ag_torchfix import trust


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

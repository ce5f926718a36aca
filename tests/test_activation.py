"""install()/uninstall(): free import, post-import hooks, idempotency, exact reversal (fresh processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def run(code: str, **env) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON document as its last line."""
    full_env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0", **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full_env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_loads_none_of_the_heavy_libraries():
    result = run(
        """
        import sys, json
        watched = ("torch", "fastai", "fastcore", "autogluon", "numpy", "pandas", "zipfile")
        before = {m for m in watched if m in sys.modules}  # e.g. AutoGluon 1.1's namespace .pth imports autogluon
        import ag_torchfix
        heavy = [m for m in watched if m in sys.modules and m not in before]
        print(json.dumps({"heavy": heavy, "status": ag_torchfix.status()}))
        """
    )
    assert result["heavy"] == []
    assert result["status"]["installed"] and result["status"]["how"] == "import"
    assert result["status"]["autogluon_patched"] is False  # nothing to patch until AutoGluon is imported


@pytest.mark.parametrize("order", ["package-first", "autogluon-first"])
def test_patch_applies_whenever_autogluon_is_imported(order):
    result = run(
        f"""
        import json
        if {order!r} == "autogluon-first":
            import autogluon.tabular.models.fastainn.tabular_nn_fastai as m
            import ag_torchfix
        else:
            import ag_torchfix
            import autogluon.tabular.models.fastainn.tabular_nn_fastai as m
        load = m.NNFastAiTabularModel.__dict__["load"]
        print(json.dumps({{"patched": getattr(load.__func__, "__ag_torchfix_patch__", False),
                           "loader": type(m.__spec__.loader).__name__}}))
        """
    )
    assert result["patched"] is True
    assert result["loader"] != "_HookedLoader"  # the real loader stays visible


def test_install_is_idempotent_and_uninstall_restores_everything_exactly():
    result = run(
        """
        import json, sys
        import torch
        from torch import _weights_only_unpickler as wou
        from fastcore.foundation import L
        torch.serialization.add_safe_globals([L])          # the user's own registration, made first
        user_before = set(torch.serialization.get_safe_globals())
        lookup_before = wou._get_user_allowed_globals
        check_before = wou.Unpickler.__dict__.get("_check_set_item_target")

        import autogluon.tabular.models.fastainn.tabular_nn_fastai as m
        load_before = m.NNFastAiTabularModel.__dict__["load"]
        import fastai.learner
        load_model_before = fastai.learner.load_model
        import ag_torchfix
        ag_torchfix.install(); ag_torchfix.install()
        hooks = sum(f.__class__.__name__ == "_PostImportFinder" for f in sys.meta_path)
        added = set(torch.serialization.get_safe_globals()) - user_before
        load_model_patched = getattr(fastai.learner.load_model, "__ag_torchfix_patch__", False)
        # a secure load patches torch's lookup; uninstall must restore it too
        from ag_torchfix import torch_scope
        torch_scope.patch(); torch_scope.patch()
        patched = wou._get_user_allowed_globals is not lookup_before

        ag_torchfix.uninstall(); ag_torchfix.uninstall()
        print(json.dumps({
            "hooks": hooks,
            "added": len(added),
            "load_model_patched": load_model_patched,
            "load_model_restored": fastai.learner.load_model is load_model_before,
            "patched": patched,
            "safe_globals_restored": set(torch.serialization.get_safe_globals()) == user_before,
            "lookup_restored": wou._get_user_allowed_globals is lookup_before,
            "check_restored": wou.Unpickler.__dict__.get("_check_set_item_target") is check_before,
            "load_restored": m.NNFastAiTabularModel.__dict__["load"] is load_before,
            "finder_removed": not any(f.__class__.__name__ == "_PostImportFinder" for f in sys.meta_path),
            "status": ag_torchfix.status(),
        }))
        """
    )
    assert result["hooks"] == 1 and result["patched"] and result["load_model_patched"]
    assert result["added"] == 0  # torch's process-wide safe set is never changed
    for key in ("safe_globals_restored", "lookup_restored", "check_restored", "load_restored", "finder_removed",
                "load_model_restored"):
        assert result[key], key
    assert result["status"]["installed"] is False and result["status"]["autogluon_patched"] is False


def test_reinstall_after_uninstall_patches_again():
    result = run(
        """
        import json
        import ag_torchfix
        import autogluon.tabular.models.fastainn.tabular_nn_fastai as m
        ag_torchfix.uninstall()
        ag_torchfix.install()
        print(json.dumps({"patched": getattr(m.NNFastAiTabularModel.__dict__["load"].__func__,
                                             "__ag_torchfix_patch__", False)}))
        """
    )
    assert result["patched"]


def test_a_failing_hook_warns_and_never_breaks_the_import(tmp_path):
    (tmp_path / "victim_mod.py").write_text("VALUE = 42\n")
    result = run(
        f"""
        import json, sys, warnings
        sys.path.insert(0, {str(tmp_path)!r})
        from ag_torchfix import import_hooks
        def broken(module):
            raise RuntimeError("boom")
        import_hooks.when_imported("victim_mod", broken)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import victim_mod
        print(json.dumps({{"value": victim_mod.VALUE, "warnings": [str(w.message) for w in caught]}}))
        """
    )
    assert result["value"] == 42
    assert any("could not apply its hook for victim_mod" in w and "boom" in w for w in result["warnings"])

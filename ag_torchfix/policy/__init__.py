"""Layer 2, policy: what may be loaded, as data with reasons, and the rules that apply it.

``allowlist`` / ``denylist`` (exact names, each with a reason), ``learner_schema`` (the genuine fastai learner,
position by position), ``dispatch`` (what AutoGluon writes at each path), ``value_invariants`` (the values libraries
trust unchecked), ``shims`` (narrow stand-ins for the few calls genuine files need), ``verdicts`` (one verdict for a
scanned pickle).  May import: ``core``, ``formats``.

``ag_torchfix.policy`` was the module now called ``ag_torchfix.policy.verdicts``; its names still resolve here.
"""


def __getattr__(name):
    """The names of the module ``ag_torchfix.policy`` was before the layered layout (now ``.verdicts``; monkeypatch
    ``ag_torchfix.policy.verdicts`` itself)."""
    import importlib

    module = importlib.import_module(".verdicts", __name__)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

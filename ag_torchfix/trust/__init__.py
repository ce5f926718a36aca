"""Layer 3, trust: when, and only when, a refused file may be loaded with full pickle.

``rules`` (trusted() blocks, AG_TORCHFIX_TRUST, lock digests), ``lock`` (``ag-torchfix lock`` / ``verify``),
``fallback`` (the one door to full pickle: the bytes trust was decided on are the bytes unpickled).
May import: ``core``, ``formats``.

``ag_torchfix.trust`` was the module now called ``ag_torchfix.trust.rules``; its names still resolve here.
"""


def __getattr__(name):
    """The names of the module ``ag_torchfix.trust`` was before the layered layout (now ``.rules``; monkeypatch
    ``ag_torchfix.trust.rules`` itself)."""
    import importlib

    module = importlib.import_module(".rules", __name__)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

"""Layer 6, cli: the commands (``ag-torchfix`` / ``python -m ag_torchfix``) and the audits behind them.

``commands`` (argument parsing and output: status, scan, doctor, lock, verify), ``scanner`` (``scan``: files and
predictor directories audited without running anything), ``doctor`` (versions and known failures).
May import: every layer below.

``ag_torchfix.cli`` was the module now called ``ag_torchfix.cli.commands``; its names (``main``) still resolve here.
"""


def __getattr__(name):
    """The names of the module ``ag_torchfix.cli`` was before the layered layout (now ``.commands``; monkeypatch
    ``ag_torchfix.cli.commands`` itself)."""
    import importlib

    module = importlib.import_module(".commands", __name__)
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

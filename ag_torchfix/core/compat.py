"""The old module names of the layered layout's packages: ``ag_torchfix.trust``, ``.policy`` and ``.cli`` were single
modules before; as packages they still resolve that module's names from the module that now holds them."""

from __future__ import annotations


def forwarding(package: str, module: str):
    """A module ``__getattr__`` for ``package`` resolving missing names from ``package.module`` (imported on first
    use).  To monkeypatch, patch ``package.module`` itself: the package only forwards reads."""
    def __getattr__(name):
        import importlib

        target = importlib.import_module(f".{module}", package)
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__

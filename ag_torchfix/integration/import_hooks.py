"""Post-import hooks: run a callback when a module finishes importing, or at once if it already has.

This is what keeps ``import ag_torchfix`` free: nothing of torch, fastai or AutoGluon is imported
by the package; its patches wait for their targets.  A meta-path finder claims only the watched
names, lets the normal finders locate the module, and wraps the loader's ``exec_module`` so the
callbacks run right after the module body.  Callback errors never break the user's import: they
are reported as a warning and swallowed.
"""

from __future__ import annotations

import _thread
import sys
import warnings

_lock = _thread.RLock()
_hooks: dict[str, list] = {}
_finding = _thread._local()


def when_imported(name: str, callback) -> None:
    """Call ``callback(module)`` once ``name`` is imported (now, if it already is)."""
    with _lock:
        _hooks.setdefault(name, [])
        if callback not in _hooks[name]:
            _hooks[name].append(callback)
        _ensure_finder()
        module = sys.modules.get(name)
    if module is not None and _fully_imported(module):
        _run(callback, module)


def discard(name: str, callback) -> None:
    """Forget a callback; remove the finder when nothing is watched any more."""
    with _lock:
        callbacks = _hooks.get(name, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            _hooks.pop(name, None)
        if not _hooks:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PostImportFinder)]


def watched() -> list[str]:
    with _lock:
        return sorted(_hooks)


def _fully_imported(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


def _run(callback, module) -> None:
    try:
        callback(module)
    except Exception as exc:  # never break the user's import
        from ..core.errors import AgTorchfixWarning

        warnings.warn(
            f"ag_torchfix could not apply its hook for {module.__name__}: {type(exc).__name__}: {exc}",
            AgTorchfixWarning,
            stacklevel=2,
        )


def _fire(name: str, module) -> None:
    with _lock:
        callbacks = list(_hooks.get(name, ()))
    for callback in callbacks:
        _run(callback, module)


def _ensure_finder() -> None:
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


class _PostImportFinder:
    """Meta-path finder that wraps the loader of watched modules; ignores every other name."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks or getattr(_finding, "active", None) == fullname:
            return None
        _finding.active = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _finding.active = None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader)
        return spec

    def invalidate_caches(self):
        pass


class _HookedLoader:
    """Delegates everything to the real loader; runs the hooks after ``exec_module``."""

    def __init__(self, loader):
        self.__dict__["_loader"] = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # show the real loader to anything that introspects the module later
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _fire(module.__name__, module)

"""Start-up hook of ag_torchfix, run by ``ag_torchfix.pth`` in every interpreter of the environment.

It must cost almost nothing and never break an interpreter, so it imports nothing and only puts a
tiny finder at the front of ``sys.meta_path``.  The first time torch, fastai or AutoGluon's fastai
model module is about to be imported, the finder removes itself and activates the package (what
``import ag_torchfix`` does); the import then proceeds normally.  AG_TORCHFIX_AUTOLOAD=0 turns this
off (the .pth line does not even import this module).  Any error is reported once and swallowed.
"""

import sys

TRIGGERS = frozenset({"torch", "fastai", "autogluon.tabular.models.fastainn.tabular_nn_fastai"})
activating = False  # read by ag_torchfix/__init__.py to record how it was activated


class _Autoload:
    """Meta-path finder that activates ag_torchfix on the first trigger import, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in TRIGGERS:
            return None
        _activate()
        # Find the module through the finders now in place, so that the package's own post-import
        # hook sees this very import (the trigger may be the module it patches).
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    return spec
        return None

    def invalidate_caches(self):
        pass


def _activate():
    global activating
    _remove()
    activating = True
    try:
        import ag_torchfix.activation

        ag_torchfix.activation.install(how="plugin")
    except Exception as exc:  # never break the user's import
        sys.stderr.write(f"ag_torchfix: automatic activation failed and is off for this process "
                         f"({type(exc).__name__}: {exc}); set AG_TORCHFIX_AUTOLOAD=0 to silence this\n")
    finally:
        activating = False


def _remove():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Autoload)]


try:
    if not any(isinstance(f, _Autoload) for f in sys.meta_path):
        if any(name in sys.modules for name in TRIGGERS):
            _activate()
        else:
            sys.meta_path.insert(0, _Autoload())
except Exception as exc:  # pragma: no cover - defensive: a .pth must never break start-up
    sys.stderr.write(f"ag_torchfix: start-up hook failed ({type(exc).__name__}: {exc})\n")

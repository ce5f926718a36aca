"""Where the flat modules of ag_torchfix 0.2 live in the layered layout, so that their old import paths keep
working: ``import ag_torchfix.scanner`` (or ``from ag_torchfix import secure_load``) gives the very module object
``ag_torchfix.cli.scanner``, so attributes and monkeypatches are shared.  ``ag_torchfix.policy``, ``.trust`` and
``.cli`` are layer subpackages now and resolve their old module's names themselves.  Code inside the package
imports the new paths only (tests/test_layers.py checks).
"""

from __future__ import annotations

import sys

MOVED = {
    "errors": "core.errors", "scopes": "core.scopes", "patching": "core.patching",
    "files": "formats.files", "archive": "formats.archive", "pickle_scan": "formats.pickle_scan",
    "records": "formats.records",
    "allowlist": "policy.allowlist", "denylist": "policy.denylist", "learner_schema": "policy.learner_schema",
    "shims": "policy.shims", "value_invariants": "policy.value_invariants", "dispatch": "policy.dispatch",
    "lock": "trust.lock", "fallback": "trust.fallback",
    "torch_scope": "load.torch_scope", "materialize": "load.materialize", "secure_load": "load.secure_load",
    "strict_unpickler": "load.strict_unpickler", "strict_mode": "load.strict_mode", "native": "load.native",
    "native_sandbox": "load.native_sandbox",
    "activation": "integration.activation", "autogluon_patch": "integration.autogluon_patch",
    "import_hooks": "integration.import_hooks",
    "scanner": "cli.scanner", "doctor": "cli.doctor",
}
PACKAGE = __name__.rpartition(".")[0]


_ModuleSpec = type(sys.__spec__)  # importlib.machinery.ModuleSpec, without importing importlib: the import stays light


def _import(name: str):
    __import__(name)
    return sys.modules[name]


class _OldPaths:
    """A meta path finder and loader (importlib.abc's protocol): imports ``ag_torchfix.<old>`` as the module at its
    new path (the same object, not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == PACKAGE and name in MOVED:
            return _ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        module = _import(f"{PACKAGE}.{MOVED[spec.name.rpartition('.')[2]]}")
        self._real_specs[module.__name__] = module.__spec__  # the import system sets the alias's spec on it next
        return module

    def exec_module(self, module):
        module.__spec__ = self._real_specs.pop(module.__name__, module.__spec__)  # the module keeps its own identity

    def __init__(self):
        self._real_specs: dict[str, object] = {}


def install() -> None:
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.append(_OldPaths())

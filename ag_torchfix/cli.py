"""Command line: ``ag-torchfix`` / ``python -m ag_torchfix``.

- ``status`` (the default): is the package active in this process, how was it activated, which
  trust settings are in force.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ag-torchfix", description="Secure loading of AutoGluon's fastai models.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="whether ag_torchfix is active here, how, and the trust settings (default)")
    args = parser.parse_args(argv)
    if args.command in (None, "status"):
        return _status()
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
    return 2


def _status() -> int:
    import ag_torchfix
    from ag_torchfix import trust

    st = ag_torchfix.status()
    how = {"plugin": "the start-up hook (ag_torchfix.pth), on the first torch/fastai/AutoGluon import",
           "import": "`import ag_torchfix`", "explicit": "ag_torchfix.install()",
           "entry point": "the autogluon.plugins entry point"}.get(st["how"], st["how"])
    print(f"ag_torchfix {ag_torchfix.__version__}: {'active' if st['installed'] else 'NOT active'} in this process")
    if st["installed"]:
        print(f"  activated by: {how}")
    autoload = os.environ.get("AG_TORCHFIX_AUTOLOAD")
    if st["startup_hook"]:
        print(f"  start-up hook: installed ({st['startup_hook']})")
    elif autoload is not None and autoload.strip() == "0":
        print("  start-up hook: turned off by AG_TORCHFIX_AUTOLOAD=0")
    else:
        print("  start-up hook: not installed in this environment (activation needs `import ag_torchfix`)")
    print(f"  AutoGluon fastai loader patched: {'yes' if st['autogluon_patched'] else 'not yet (AutoGluon fastai model module not imported)'}")
    print(f"  fastai checkpoint globals added to torch's safe set: {st['fastai_globals_registered'] or 'not yet (fastai not imported)'}")
    t = trust.describe()
    env = t["env"]
    meaning = {"none": "nothing trusted", "all": "every file trusted", "paths": "files under " + ", ".join(t["env_paths"]),
               "invalid": "not understood: nothing trusted"}[t["env_trusts"]]
    print("trust:")
    print(f"  AG_TORCHFIX_TRUST: {'unset' if env is None else repr(env)} ({meaning})")
    print(f"  TORCH_FORCE_WEIGHTS_ONLY_LOAD: {'set: weights-only is forced, trust never enables full pickle' if t['torch_force_weights_only'] else 'unset'}")
    return 0

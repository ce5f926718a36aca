"""Command line: ``ag-torchfix`` / ``python -m ag_torchfix``.

- ``status`` (the default): is the package active in this process, how, and the trust settings;
- ``scan PATH...``: audit predictor directories and files without loading them (exit 0 all allowed,
  1 something needs trust, 2 something dangerous, 3 a file could not be read; a known danger wins);
- ``doctor``: versions, the known failures, whether this environment has them and is covered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ag-torchfix", description="Secure loading of AutoGluon's fastai models.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="whether ag_torchfix is active here, how, and the trust settings (default)")
    scan = sub.add_parser("scan", help="audit predictor directories and pickle files without loading them")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--json", action="store_true", help="print one JSON document (schema ag_torchfix.scan/1)")
    scan.add_argument("--verbose", "-v", action="store_true", help="list every global, not only the problems")
    scan.add_argument("--strict", action="store_true",
                      help="judge AutoGluon's own pickles against the strict-mode allowlist (will it load in strict mode?)")
    doctor = sub.add_parser("doctor", help="versions, known failures, and whether ag_torchfix covers them here")
    doctor.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "scan":
        return _scan(args)
    if args.command == "doctor":
        return _doctor(args)
    return _status()


# --- status ----------------------------------------------------------------------------------------

def _status() -> int:
    import ag_torchfix

    st = ag_torchfix.status()
    how = {"plugin": "the start-up hook (ag_torchfix.pth), on the first torch/fastai/AutoGluon import",
           "import": "`import ag_torchfix`", "explicit": "ag_torchfix.install()",
           "entry point": "the autogluon.plugins entry point"}.get(st["how"], st["how"])
    print(f"ag_torchfix {ag_torchfix.__version__}: {'active' if st['installed'] else 'NOT active'} in this process")
    if st["installed"]:
        print(f"  activated by: {how}")
    print(f"  start-up hook: {_hook_state(st)}")
    print(f"  strict mode: {'on' if st['strict'] else 'off'} (AG_TORCHFIX_STRICT=1, ag_torchfix.strict(), "
          "install(strict=True))")
    print("  AutoGluon fastai loader patched: "
          + ("yes" if st["autogluon_patched"] else "not yet (AutoGluon's fastai model module is not imported)"))
    print("  fastai checkpoint globals added to torch's safe set: "
          + (str(st["fastai_globals_registered"]) if st["fastai_globals_registered"] else "not yet (fastai not imported)"))
    print("trust:")
    for line in _trust_lines():
        print(f"  {line}")
    return 0


def _hook_state(st: dict) -> str:
    if st["startup_hook"]:
        return f"installed ({st['startup_hook']})"
    if os.environ.get("AG_TORCHFIX_AUTOLOAD", "").strip() == "0":
        return "turned off by AG_TORCHFIX_AUTOLOAD=0"
    return "not installed in this environment (activation needs `import ag_torchfix`)"


def _trust_lines() -> list[str]:
    from ag_torchfix import trust

    t = trust.describe()
    meaning = {"none": "nothing trusted", "all": "every file trusted",
               "paths": "files under " + ", ".join(t["env_paths"]), "invalid": "not understood: nothing trusted"}
    env = "unset" if t["env"] is None else repr(t["env"])
    force = ("set: weights-only loading is forced, trust never enables full pickle" if t["torch_force_weights_only"]
             else "unset")
    return [f"AG_TORCHFIX_TRUST: {env} ({meaning[t['env_trusts']]})", f"TORCH_FORCE_WEIGHTS_ONLY_LOAD: {force}"]


# --- scan ------------------------------------------------------------------------------------------

_COLOURS = {"allowed": "32", "needs-trust": "33", "dangerous": "31;1", "unreadable": "35"}
_LABELS = {"allowed": "loads securely", "needs-trust": "needs trust", "dangerous": "DANGEROUS",
           "unreadable": "unreadable"}


def _scan(args) -> int:
    from ag_torchfix import scanner

    progress = _Progress() if sys.stderr.isatty() else None
    report = scanner.scan_paths(args.paths, strict=args.strict, progress=progress)
    if progress:
        progress.done()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_report(report, verbose=args.verbose, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    return report.exit_code


def _print_report(report, *, verbose: bool, colour: bool) -> None:
    paint = (lambda text, verdict: f"\033[{_COLOURS[verdict]}m{_LABELS[verdict]:>14}\033[0m") if colour else (
        lambda text, verdict: f"{_LABELS[verdict]:>14}")
    roots = [d.path for d in report.directories]
    for f in report.files:
        where = f" [{f.model}]" if f.model else ""
        root = next((r for r in roots if f.path.startswith(r.rstrip(os.sep) + os.sep)), None)
        shown = os.path.relpath(f.path, root) if root else f.path
        print(f"{paint(f.verdict, f.verdict)}  {shown}{where}")
        if f.error:
            print(f"{'':16}{f.error}")
        if f.note and (verbose or not root):
            print(f"{'':16}{f.note}")
        for g in f.globals:
            if g.status == "dangerous":
                print(f"{'':16}dangerous: {g.name} ({g.reason})")
        unknown = [g.name for g in f.globals if g.status == "unknown"]
        if unknown and (f.covered or verbose):
            shown = unknown if verbose else unknown[:8]
            more = f" ... and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
            print(f"{'':16}not in the allowlist: {', '.join(shown)}{more}")
        for c in f.constructs[: None if verbose else 5]:
            print(f"{'':16}refused construct: {c}")
        if verbose:
            for g in f.globals:
                if g.status == "allowed":
                    print(f"{'':16}allowed: {g.name}")
    for d in report.directories:
        kind = "AutoGluon predictor" if d.predictor else "directory"
        print(f"\n{d.path} ({kind}, {d.files} pickle files): {paint(d.verdict, d.verdict).strip()}")
        if d.loads_securely:
            print("  every file loads securely with ag_torchfix" + (" in strict mode" if report.strict else ""))
        for label, items in (("need trust", d.needs_trust), ("dangerous", d.dangerous),
                             ("unreadable", d.unreadable)):
            if items:
                print(f"  {len(items)} {label}: {', '.join(items[:6])}{' ...' if len(items) > 6 else ''}")
        if d.predictor and d.needs_trust and not report.strict:
            print("  AutoGluon's own pickles (predictor.pkl, learner.pkl, trainer.pkl, model.pkl, utils/) are loaded "
                  "with full pickle outside strict mode; `ag-torchfix scan --strict` checks whether strict mode loads them.")
    counts = {v: sum(f.verdict == v for f in report.files) for v in _LABELS}
    summary = {"allowed": "load securely", "needs-trust": "need trust", "dangerous": "dangerous",
               "unreadable": "unreadable"}
    print(f"\n{len(report.files)} files: " + ", ".join(f"{n} {summary[v]}" for v, n in counts.items())
          + f" (exit {report.exit_code})")


class _Progress:
    """A one-line progress bar on stderr (only used when stderr is a terminal)."""

    def __init__(self):
        self.shown = False

    def __call__(self, done: int, total: int, path: str) -> None:
        if total < 20:
            return
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {os.path.basename(path)[:30]:<30}")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 80 + "\r")


# --- doctor ----------------------------------------------------------------------------------------

def _doctor(args) -> int:
    from ag_torchfix import doctor

    findings = doctor.examine()
    if args.json:
        json.dump(findings, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print("versions:")
    for name, version in findings["versions"].items():
        print(f"  {name:<22} {version or 'not installed'}")
    print("known failures:")
    for f in findings["failures"]:
        print(f"  - {f['name']}")
        print(f"      this environment: {'AFFECTED' if f['affected'] else 'not affected'} ({f['why']})")
        print(f"      ag_torchfix: {f['coverage']}")
    print("ag_torchfix:")
    for line in findings["package"]:
        print(f"  {line}")
    print("trust:")
    for line in _trust_lines():
        print(f"  {line}")
    return 0

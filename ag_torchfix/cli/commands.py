"""Command line: ``ag-torchfix`` / ``python -m ag_torchfix``.

- ``status`` (the default): is the package active in this process, how, and the trust settings;
- ``scan PATH...``: audit predictor directories and files without loading them (exit 0 all allowed,
  1 something needs trust, 2 something dangerous, 3 a file could not be read; a known danger wins);
- ``doctor``: versions, the known failures, whether this environment has them and is covered;
- ``lock DIR``: write DIR/ag_torchfix.lock (every file's size and SHA-256) and print its digest;
- ``verify DIR``: exit 0 when every file matches the lock, 2 when any changed, was added or removed,
  3 when there is no readable lock.
Everything printed that comes from a file (paths, global names) is escaped: no control characters reach
the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ag-torchfix", description="Secure loading of AutoGluon's fastai models.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("status", help="whether ag_torchfix is active here, how, and the trust settings (default)")
    scan = sub.add_parser("scan", help="audit predictor directories and pickle files without loading them")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--json", action="store_true", help="print one JSON document (schema ag_torchfix.scan/2)")
    scan.add_argument("--verbose", "-v", action="store_true", help="list every global, not only the problems")
    scan.add_argument("--strict", action="store_true",
                      help="judge AutoGluon's own pickles against the strict-mode allowlist (will it load in strict mode?)")
    doctor = sub.add_parser("doctor", help="versions, known failures, and whether ag_torchfix covers them here")
    doctor.add_argument("--json", action="store_true")
    lock = sub.add_parser("lock", help="write DIR/ag_torchfix.lock (size and SHA-256 of every file) and print its digest")
    lock.add_argument("directory", metavar="DIR")
    verify = sub.add_parser("verify", help="check DIR against its ag_torchfix.lock (exit 0 match, 2 differs, 3 no lock)")
    verify.add_argument("directory", metavar="DIR")
    verify.add_argument("--expect", metavar="sha256:DIGEST", type=_digest,
                        help="the lock digest you trust (what `lock` printed): another lock does not match (exit 2)")
    verify.add_argument("--json", action="store_true", help="print one JSON document (schema ag_torchfix.verify/1)")
    args = parser.parse_args(argv)
    commands = {"scan": _scan, "doctor": _doctor, "lock": _lock, "verify": _verify}
    if args.command in commands:
        return commands[args.command](args)
    return _status()


def safe(text) -> str:
    """Text from a file or a path, with control characters escaped so that it cannot drive the terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


# --- status ----------------------------------------------------------------------------------------

def _status() -> int:
    from ..core.versions import PACKAGE_VERSION
    from ..integration import activation

    st = activation.status()
    how = {"plugin": "the start-up hook (ag_torchfix.pth), on the first torch/fastai/AutoGluon import",
           "import": "`import ag_torchfix`", "explicit": "ag_torchfix.install()",
           "entry point": "the autogluon.plugins entry point"}.get(st["how"], st["how"])
    print(f"ag_torchfix {PACKAGE_VERSION}: {'active' if st['installed'] else 'NOT active'} in this process")
    if st["installed"]:
        print(f"  activated by: {how}")
    print(f"  start-up hook: {_hook_state(st)}")
    print(f"  strict mode: {'on' if st['strict'] else 'off'} (AG_TORCHFIX_STRICT=1, ag_torchfix.strict(), "
          "install(strict=True))")
    print("  AutoGluon fastai loader patched: "
          + ("yes" if st["autogluon_patched"] else "not yet (AutoGluon's fastai model module is not imported)"))
    print("  fastai checkpoint reloads (load_model) scoped: "
          + ("yes (for each call only; torch's process-wide safe set is unchanged)" if st["fastai_load_model_scoped"]
             else "not yet (fastai not imported)"))
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
    from ..trust import rules as trust

    t = trust.describe()
    entries = [f"files under {p}" for p in t["env_paths"]] + [f"files locked by {d[:19]}..." for d in t["env_locks"]]
    meaning = {"none": "nothing trusted", "all": "every file trusted", "entries": "; ".join(entries),
               "invalid": "not understood: nothing trusted"}
    env = "unset" if t["env"] is None else repr(t["env"])
    force = ("set: weights-only loading is forced, trust never enables full pickle" if t["torch_force_weights_only"]
             else "unset")
    return [f"AG_TORCHFIX_TRUST: {env} ({meaning[t['env_trusts']]})", f"TORCH_FORCE_WEIGHTS_ONLY_LOAD: {force}"]


# --- scan ------------------------------------------------------------------------------------------

_COLOURS = {"allowed": "32", "needs-trust": "33", "dangerous": "31;1", "unreadable": "35"}
_LABELS = {"allowed": "loads securely", "needs-trust": "needs trust", "dangerous": "DANGEROUS",
           "unreadable": "unreadable"}


def _scan(args) -> int:
    from . import scanner

    progress = _Progress() if sys.stderr.isatty() else None
    report = scanner.scan_paths(args.paths, strict=args.strict, progress=progress)
    if progress:
        progress.done()
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_report(report, verbose=args.verbose, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
        if not scanner.has_stack_tables() and any(f.role in ("fastai-internals", "torch-archive") for f in report.files):
            print(f"note: no measured stack table ships for this environment ({safe(scanner.stack_key())}): fastai "
                  "and torch were imported to judge their files (slower, same verdicts; tools/sweep_stack_tables.py "
                  "measures one)")
    return report.exit_code


def _print_report(report, *, verbose: bool, colour: bool) -> None:
    paint = (lambda text, verdict: f"\033[{_COLOURS[verdict]}m{_LABELS[verdict]:>14}\033[0m") if colour else (
        lambda text, verdict: f"{_LABELS[verdict]:>14}")
    roots = [d.path for d in report.directories]
    for f in report.files:
        where = f" [{f.model}]" if f.model else ""
        root = next((r for r in roots if f.path.startswith(r.rstrip(os.sep) + os.sep)), None)
        shown = os.path.relpath(f.path, root) if root else f.path
        print(f"{paint(f.verdict, f.verdict)}  {safe(shown)}{safe(where)}")
        if f.error:
            print(f"{'':16}{safe(f.error)}")
        if f.note and (verbose or not root):
            print(f"{'':16}{safe(f.note)}")
        for g in f.globals:
            if g.status == "dangerous":
                print(f"{'':16}dangerous: {safe(g.name)} ({g.reason})")
        unknown = [safe(g.name) for g in f.globals if g.status == "unknown"]
        if unknown and (f.covered or verbose):
            shown = unknown if verbose else unknown[:8]
            more = f" ... and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else ""
            print(f"{'':16}not in the allowlist: {', '.join(shown)}{more}")
        for c in f.constructs[: None if verbose else 5]:
            print(f"{'':16}refused construct: {safe(c)}")
        if verbose:
            for g in f.globals:
                if g.status == "allowed":
                    print(f"{'':16}allowed: {safe(g.name)}")
    for d in report.directories:
        kind = "AutoGluon predictor" if d.predictor else "directory"
        print(f"\n{safe(d.path)} ({kind}, {d.files} files): {paint(d.verdict, d.verdict).strip()}")
        if d.loads_securely:
            print("  every file loads securely with ag_torchfix" + (" in strict mode" if report.strict else ""))
        for label, items in (("need trust", d.needs_trust), ("dangerous", d.dangerous),
                             ("unreadable", d.unreadable)):
            if items:
                print(f"  {len(items)} {label}: {safe(', '.join(items[:6]))}{' ...' if len(items) > 6 else ''}")
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
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {safe(os.path.basename(path))[:30]:<30}")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 80 + "\r")


# --- lock / verify ---------------------------------------------------------------------------------

def _digest(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise argparse.ArgumentTypeError("expected sha256:<64 hex digits>, as `ag-torchfix lock` prints it")
    return value


def _lock(args) -> int:
    from ..trust import lock

    try:
        path, digest, doc = lock.write(args.directory)
    except (lock.LockError, OSError) as exc:
        print(f"ag-torchfix lock: {safe(exc)}", file=sys.stderr)
        return 3
    total = sum(entry["size"] for entry in doc["files"].values())
    print(f"locked {len(doc['files'])} files ({total / 1e6:.1f} MB) of {safe(args.directory)} in {safe(path)}")
    print(f"trust exactly these bytes with: AG_TORCHFIX_TRUST={digest}")
    print(digest)
    return 0


def _verify(args) -> int:
    from ..trust import lock

    result = lock.verify(args.directory, expect=args.expect)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return result.exit_code
    if result.error:
        print(f"{safe(args.directory)}: {safe(result.error)} (exit 3)")
        return 3
    for rel, expected, actual in result.changed:
        got = f"sha256:{actual[:16]}..." if actual[:1] != "(" else actual
        print(f"   changed  {safe(rel)} (expected sha256:{safe(expected[:16])}..., got {safe(got)})")
    for label, items in (("added", result.added), ("removed", result.removed), ("not a file", result.not_regular)):
        for rel in items:
            print(f"{label:>10}  {safe(rel)}")
    if result.unexpected:
        print(f"  the lock's digest {result.digest} is not the expected {result.expected}")
    verdict = "matches its lock" if result.ok else "does NOT match its lock"
    print(f"{safe(args.directory)} {verdict} ({result.digest}) (exit {result.exit_code})")
    return result.exit_code


# --- doctor ----------------------------------------------------------------------------------------

def _doctor(args) -> int:
    from . import doctor

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
        print(f"      error: {f['error']}")
        print(f"      this environment: {'AFFECTED' if f['affected'] else 'not affected'}")
        print(f"      ag_torchfix: {f['coverage']}")
    print("ag_torchfix:")
    for line in findings["package"]:
        print(f"  {line}")
    print("trust:")
    for line in _trust_lines():
        print(f"  {line}")
    return 0

"""Run AutoGluon's own tabular unit tests with strict mode on in every process, and say what strict mode broke.

Usage: python tools/ag_suite.py [--checkout DIR] [--subset quick|models|all] [--baseline] [--json OUT]
                                [--python PY] [--timeout SECONDS] [-- PYTEST_ARGS...]

AutoGluon's tests are not on PyPI: the autogluon.tabular 1.6.3 sdist ships only tests/test_check_style.py (the
wheel none), so the harness runs them from a checkout of https://github.com/autogluon/autogluon given by
``--checkout DIR`` or ``AG_SUITE_CHECKOUT`` (the tag matching the installed AutoGluon, v1.6.3 here:
``git clone --depth 1 --branch v1.6.3 https://github.com/autogluon/autogluon DIR``).  Nothing from the checkout
is copied into this repository.  The harness compares the checkout's sources of autogluon.common, core, features
and tabular with the installed ones and reports every file that differs (a tag whose sources match is as good:
v1.6.1's tabular, core and features are byte-identical to the 1.6.3 wheels, common differs in one file).

Every process of the run has strict mode on: pytest and everything it starts (Ray workers fitting folds,
multiprocessing children) inherit AG_TORCHFIX_STRICT=1, and ag_torchfix activates itself through its start-up hook
(checked first: the harness refuses to run without it, since then the children would not be strict).  A
``sitecustomize`` on PYTHONPATH (in a temporary directory) records every ag_torchfix refusal made in any of those
processes, also the ones AutoGluon swallows (a model that fails to load during fit is skipped with a warning),
and a pytest plugin records each test's window and outcome; refusals are attributed to the test that was running.

Subsets (AutoGluon's datasets other than its generated toy ones download from S3, which fails offline, and the
GPU / foundation-model tests need GPUs or model hubs; ``--baseline`` tells those failures apart):
- ``quick`` (default, 159 tests, 5 to 14 minutes on this shared 2-core machine): the tests on AutoGluon's
  generated toy data, which need no download: the CPU model families' own tests (LightGBM, CatBoost, XGBoost,
  RF, XT, KNN, LR, NN_TORCH, FastAI, the dummy model; each fits bagged, stacked and refit predictors and loads
  them again), bagged model random seeds, calibration, the scikit-learn API, the label cleaner, learning curves
  and the edge cases (one of which downloads a dataset);
- ``models``: all of tests/unittests/models;
- ``all``: all of tests/unittests (hours here; slow, GPU and regression tests stay skipped as upstream does).

Output: pass/fail counts; for each failure, the first ag_torchfix message seen (from its traceback, or the first
refusal recorded during it) and whether strict mode is to blame; passed tests during which strict mode refused
a file (swallowed); with ``--baseline``, the failures re-run with strict mode off (a failure that also fails
there is not strict mode's).  Exit 0 when no failure and no swallowed refusal is strict mode's, 1 otherwise,
2 when the run could not be made.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPONENTS = ("common", "core", "features", "tabular")

SUBSETS = {
    "quick": [
        "tests/unittests/models/test_lightgbm.py", "tests/unittests/models/test_catboost.py",
        "tests/unittests/models/test_xgboost.py", "tests/unittests/models/test_rf.py",
        "tests/unittests/models/test_xt.py", "tests/unittests/models/test_knn.py",
        "tests/unittests/models/test_linear.py", "tests/unittests/models/test_tabular_nn.py",
        "tests/unittests/models/test_tabular_nn_fastai.py", "tests/unittests/models/test_dummy.py",
        "tests/unittests/models/advanced/test_model_random_seed.py", "tests/unittests/calibrate",
        "tests/unittests/experimental", "tests/unittests/data", "tests/unittests/edgecases",
    ],
    "models": ["tests/unittests/models"],
    "all": ["tests/unittests"],
}

# A sitecustomize for every process of the run: records each ag_torchfix refusal (SecureLoadError and its
# subclasses are constructed exactly once per refusal) without importing ag_torchfix itself, so that the package
# is still activated by its own start-up hook.
SITECUSTOMIZE = textwrap.dedent('''
    import os, sys

    def _ag_suite_install():
        log = os.environ.get("AG_SUITE_LOG")
        if not log:
            return
        import importlib.abc, importlib.util

        def patch(module):
            import json, time
            cls = module.SecureLoadError
            original = cls.__init__

            def __init__(self, *args, **kwargs):
                original(self, *args, **kwargs)
                try:
                    with open(log, "a") as fh:
                        fh.write(json.dumps({"event": "refusal", "pid": os.getpid(), "t": time.time(),
                                             "type": type(self).__name__, "message": str(self)}) + "\\n")
                except Exception:
                    pass

            cls.__init__ = __init__

        class Finder(importlib.abc.MetaPathFinder):
            def find_spec(self, fullname, path=None, target=None):
                if fullname != "ag_torchfix.core.errors":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(fullname)
                if spec is None or spec.loader is None:
                    return spec
                exec_module = spec.loader.exec_module

                def exec_and_patch(module):
                    exec_module(module)
                    patch(module)

                spec.loader.exec_module = exec_and_patch
                return spec

        sys.meta_path.insert(0, Finder())

    _ag_suite_install()
    del _ag_suite_install
''')

# The pytest plugin: each test's window and outcome, and the state of ag_torchfix at the end of the session.
PLUGIN = textwrap.dedent('''
    import json, os, sys, time

    LOG = os.environ["AG_SUITE_LOG"]

    def _write(**record):
        with open(LOG, "a") as fh:
            fh.write(json.dumps(record) + "\\n")

    def pytest_runtest_logstart(nodeid, location):
        _write(event="start", nodeid=nodeid, t=time.time())

    def pytest_runtest_logreport(report):
        if report.when == "call" or report.outcome != "passed":
            text = report.longreprtext if report.outcome != "passed" else ""
            _write(event="report", nodeid=report.nodeid, when=report.when, outcome=report.outcome,
                   xfail=hasattr(report, "wasxfail"), text=text[-20000:], t=time.time())

    def pytest_runtest_logfinish(nodeid, location):
        _write(event="finish", nodeid=nodeid, t=time.time())

    def pytest_sessionfinish(session, exitstatus):
        module = sys.modules.get("ag_torchfix")
        status = module.status() if module is not None else None
        _write(event="session", exitstatus=int(exitstatus), ag_torchfix=status and {
            k: status[k] for k in ("installed", "how", "strict", "startup_hook")}, t=time.time())
''')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", default=os.environ.get("AG_SUITE_CHECKOUT"),
                        help="a checkout of github.com/autogluon/autogluon at the installed version's tag "
                             "(default: $AG_SUITE_CHECKOUT)")
    parser.add_argument("--subset", choices=sorted(SUBSETS), default="quick")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the environment under test")
    parser.add_argument("--baseline", action="store_true",
                        help="re-run the failures with strict mode off, to tell strict mode's failures apart")
    parser.add_argument("--json", metavar="OUT", help="write the whole result as JSON")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the strict run (default 3600)")
    parser.add_argument("pytest_args", nargs="*", help="after --: test paths / options passed to pytest instead "
                                                       "of the subset's paths")
    args = parser.parse_args(argv)

    if not args.checkout:
        print(textwrap.dedent("""\
            ag_suite: no checkout of AutoGluon's tests given (--checkout DIR or AG_SUITE_CHECKOUT).
            The autogluon.tabular sdist on PyPI does not carry the unit tests (only tests/test_check_style.py),
            so the harness needs a checkout of the tag matching the installed AutoGluon, e.g.
              git clone --depth 1 --branch v1.6.3 https://github.com/autogluon/autogluon /tmp/autogluon
              make ag-suite AG_SUITE_CHECKOUT=/tmp/autogluon"""), file=sys.stderr)
        return 2
    checkout = pathlib.Path(args.checkout).resolve()
    tests_root = checkout / "tabular"
    if not (tests_root / "tests" / "unittests").is_dir():
        print(f"ag_suite: {checkout} is not a checkout of autogluon (no tabular/tests/unittests)", file=sys.stderr)
        return 2

    env_state = probe_environment(args.python)
    print(f"environment: {args.python}: autogluon.tabular {env_state['versions'].get('autogluon.tabular')}, "
          f"ag_torchfix {env_state['versions'].get('ag-torchfix')}, start-up hook "
          f"{'installed' if env_state['startup_hook'] else 'MISSING'}, strict mode "
          f"{'on' if env_state['strict'] else 'OFF'} with AG_TORCHFIX_STRICT=1")
    if not env_state["startup_hook"] or not env_state["strict"]:
        print("ag_suite: ag_torchfix's start-up hook is not installed in that environment (pip install the "
              "package there): its child processes would not be strict", file=sys.stderr)
        return 2
    differ = compare_sources(checkout, env_state["site"])
    if differ:
        print(f"checkout: {checkout}: {len(differ)} source files differ from the installed AutoGluon "
              f"(e.g. {', '.join(differ[:5])}): failures may be version skew")
    else:
        print(f"checkout: {checkout}: sources of autogluon.{{{','.join(COMPONENTS)}}} match the installed ones")

    targets = args.pytest_args or SUBSETS[args.subset]
    with tempfile.TemporaryDirectory(prefix="ag-suite-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (tmp / "ag_suite_plugin.py").write_text(PLUGIN)
        started = time.time()
        strict = run_pytest(args.python, tests_root, tmp, targets, strict=True, timeout=args.timeout)
        seconds = time.time() - started
        baseline = None
        failed = [t for t, r in strict["tests"].items() if r["outcome"] == "failed"]
        if args.baseline and failed:
            baseline = run_pytest(args.python, tests_root, tmp, failed, strict=False, timeout=args.timeout)

    result = summarize(strict, baseline, seconds, targets, checkout, differ)
    print_summary(result)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if strict["session"] is None:
        return 2
    return 1 if result["strict_failures"] or result["swallowed"] else 0


def probe_environment(python: str) -> dict:
    code = textwrap.dedent("""
        import importlib.metadata as md, json, sys, sysconfig
        import ag_torchfix.activation as a
        versions = {}
        for name in ("autogluon.tabular", "ag-torchfix", "torch", "fastai"):
            try:
                versions[name] = md.version(name)
            except md.PackageNotFoundError:
                versions[name] = None
        print(json.dumps({"startup_hook": "_ag_torchfix_autoload" in sys.modules, "strict": a.strict_env_enabled(),
                          "versions": versions, "site": sysconfig.get_paths()["purelib"]}))
    """)
    env = {**os.environ, "AG_TORCHFIX_STRICT": "1"}
    env.pop("AG_TORCHFIX_AUTOLOAD", None)
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"ag_suite: cannot inspect {python}: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def compare_sources(checkout: pathlib.Path, site: str) -> list[str]:
    """Python files of autogluon.{common,core,features,tabular} that differ between the checkout and the
    installed packages (present in one only, or different bytes)."""
    differ = []
    for component in COMPONENTS:
        mine = checkout / component / "src" / "autogluon" / component
        installed = pathlib.Path(site) / "autogluon" / component
        names = {p.relative_to(mine) for p in mine.rglob("*.py")} | {p.relative_to(installed)
                                                                     for p in installed.rglob("*.py")}
        for name in sorted(names):
            a, b = mine / name, installed / name
            if name.name == "version.py":
                continue  # written at build time
            if not (a.is_file() and b.is_file()) or _digest(a) != _digest(b):
                differ.append(f"{component}/{name}")
    return differ


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_pytest(python: str, cwd: pathlib.Path, tmp: pathlib.Path, targets: list[str], *, strict: bool,
               timeout: float) -> dict:
    log = tmp / ("strict.jsonl" if strict else "baseline.jsonl")
    env = {**os.environ, "AG_SUITE_LOG": str(log), "AG_TORCHFIX_STRICT": "1" if strict else "0",
           "PYTHONPATH": os.pathsep.join([str(tmp)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH")
                                                       else []))}
    env.pop("AG_TORCHFIX_AUTOLOAD", None)
    env.pop("AG_TORCHFIX_TRUST", None)  # nothing trusted: a refusal must show
    basetemp = tmp / ("basetemp-strict" if strict else "basetemp-baseline")
    command = [python, "-m", "pytest", "-p", "ag_suite_plugin", "-p", "no:cacheprovider", "-q", "-rN",
               "--basetemp", str(basetemp), "-o", "addopts=", *targets]
    shown = " ".join(targets) if len(targets) <= 20 else f"{len(targets)} tests"
    print(f"running ({'strict mode on' if strict else 'baseline: strict mode off'}): pytest {shown}", flush=True)
    # its own session: on a timeout or an interrupt the whole run (Ray's workers and servers included) is ended
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        tail = output[-3000:]
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = f"timed out after {timeout} s"
        print(f"ag_suite: {tail}", file=sys.stderr)
    return parse_log(log, tail)


def parse_log(log: pathlib.Path, tail: str) -> dict:
    tests: dict[str, dict] = {}
    refusals: list[dict] = []
    windows: list[tuple[float, float, str]] = []
    session = None
    starts: dict[str, float] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            event = record["event"]
            if event == "start":
                starts[record["nodeid"]] = record["t"]
                tests.setdefault(record["nodeid"], {"outcome": "passed", "text": "", "refusals": []})
            elif event == "report":
                test = tests.setdefault(record["nodeid"], {"outcome": "passed", "text": "", "refusals": []})
                outcome = record["outcome"]
                if record["xfail"]:
                    outcome = "xfailed" if outcome == "skipped" else "xpassed"
                elif outcome == "failed" and record["when"] != "call":
                    outcome = "error"
                if outcome != "passed" and test["outcome"] in ("passed", "skipped"):
                    test["outcome"], test["text"] = outcome, record["text"]
            elif event == "finish":
                windows.append((starts.get(record["nodeid"], record["t"]), record["t"], record["nodeid"]))
            elif event == "refusal":
                refusals.append(record)
            elif event == "session":
                session = record
    for refusal in refusals:
        for start, end, nodeid in windows:
            if start <= refusal["t"] <= end:
                tests[nodeid]["refusals"].append(refusal["message"])
                break
    return {"tests": tests, "session": session, "tail": tail, "unattributed": [
        r["message"] for r in refusals if not any(s <= r["t"] <= e for s, e, _ in windows)]}


def first_ag_torchfix_message(test: dict) -> str | None:
    """The refusal in the failure's exception lines (pytest's "E " lines), else anywhere in its report, else the
    first refusal recorded while the test ran (in any process)."""
    lines = test["text"].splitlines()
    for wanted in (lambda line: line.startswith("E ") and "ag_torchfix refused" in line,
                   lambda line: "ag_torchfix refused" in line):
        for line in lines:
            if wanted(line):
                return line.lstrip("E ").strip()[:600]
    return test["refusals"][0].splitlines()[0][:600] if test["refusals"] else None


def summarize(strict: dict, baseline: dict | None, seconds: float, targets, checkout, differ) -> dict:
    counts: dict[str, int] = {}
    failures, swallowed = [], []
    for nodeid, test in sorted(strict["tests"].items()):
        counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
        message = first_ag_torchfix_message(test)
        if test["outcome"] in ("failed", "error"):
            fails_without = None
            if baseline is not None and nodeid in baseline["tests"]:
                fails_without = baseline["tests"][nodeid]["outcome"] in ("failed", "error")
            last = [line for line in test["text"].splitlines() if line.startswith("E ")][-1:] or [""]
            failures.append({"test": nodeid, "outcome": test["outcome"], "ag_torchfix": message,
                             "error": last[0][:400], "fails_without_strict": fails_without,
                             "strict_mode_fault": bool(message) and fails_without is not True})
        elif message:
            swallowed.append({"test": nodeid, "outcome": test["outcome"], "ag_torchfix": message,
                              "refusals": len(test["refusals"])})
    return {
        "schema": "ag_torchfix.ag_suite/1", "checkout": str(checkout), "sources_differ": differ,
        "targets": list(targets), "seconds": round(seconds), "counts": counts,
        "ag_torchfix_in_pytest": (strict["session"] or {}).get("ag_torchfix"),
        "failures": failures, "strict_failures": [f for f in failures if f["strict_mode_fault"]],
        "swallowed": swallowed, "unattributed_refusals": strict["unattributed"][:20],
        "exitstatus": (strict["session"] or {}).get("exitstatus"),
        "pytest_tail": strict["tail"] if (strict["session"] or {}).get("exitstatus") not in (0, 1) else None,
    }


def print_summary(result: dict) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(result["counts"].items()))
    print(f"\nAutoGluon tabular tests with strict mode on ({result['seconds']} s): {counts or 'nothing ran'}")
    state = result["ag_torchfix_in_pytest"]
    if state:
        print(f"ag_torchfix in the pytest process: activated by {state['how']}, strict mode "
              f"{'on' if state['strict'] else 'OFF'}")
    if result["pytest_tail"]:
        print(f"pytest ended with exit status {result['exitstatus']}:\n" + result["pytest_tail"])
    if not state:
        print("ag_torchfix in the pytest process: not activated (nothing imported torch, fastai or AutoGluon's "
              "fastai model)")
    for failure in result["failures"]:
        blame = ("STRICT MODE" if failure["strict_mode_fault"] else
                 "also fails without strict mode" if failure["fails_without_strict"] else
                 "no ag_torchfix refusal")
        print(f"  {failure['outcome'].upper():6} {failure['test']}  [{blame}]")
        print(f"         {failure['ag_torchfix'] or failure['error']}")
    for item in result["swallowed"]:
        print(f"  {item['outcome']:6} {item['test']}  [strict mode refused {item['refusals']} file(s), swallowed]")
        print(f"         {item['ag_torchfix']}")
    for message in result["unattributed_refusals"]:
        print(f"  refusal outside any test: {message.splitlines()[0][:300]}")
    print(f"strict mode's fault: {len(result['strict_failures'])} failure(s), {len(result['swallowed'])} "
          f"swallowed refusal(s)")


if __name__ == "__main__":
    sys.exit(main())

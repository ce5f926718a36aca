"""``ag-torchfix doctor`` and the VersionWarning: what this environment runs into, from measured facts.

``KNOWN_FAILURES`` is the table of failures the compatibility runs (``make compat-wide``,
``tools/compat.py``) reproduced, each keyed by the version ranges it was measured on, with its exact
error and its remedy.  Versions come from package metadata (nothing heavy is imported); whether
AutoGluon's NeuralNetFastAI can be used at all is asked of a subprocess that imports AutoGluon's
fastai model and its import check (AutoGluon 1.2 and 1.3 import fastai through ``pkg_resources``,
which setuptools >= 81 no longer ships).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..integration import activation
from ..trust import rules as trust
from ..core.versions import (MIN_TORCH, TESTED, autogluon_torch_range, installed_version, is_tested, outside_autogluon_torch_range, parse, satisfies, untested_versions)

@dataclass(frozen=True)
class Env:
    versions: dict[str, str | None]
    forced: bool
    torch_pin: str | None = None  # the torch requirement autogluon.tabular declares (its fastai extra)

    def v(self, name: str) -> tuple[int, ...] | None:
        return parse(self.versions.get(name))


@dataclass(frozen=True)
class KnownFailure:
    id: str
    title: str
    error: str  # the first line users see
    applies: Callable[[Env], bool]
    covered: str  # what ag_torchfix does about it ("" when it cannot: see remedy)
    remedy: str
    measured: str  # the stacks the compatibility runs reproduced it on


def _weights_only_torch(env: Env) -> bool:
    torch = env.v("torch")
    return torch is not None and (torch[:2] >= (2, 6) or env.forced)


KNOWN_FAILURES: tuple[KnownFailure, ...] = (
    KnownFailure(
        "fastai-unscoped", "NeuralNetFastAI fails to train: fastai reloads its best checkpoint without allowlisting its "
        "own classes", "Unsupported global: GLOBAL fastcore.foundation.L was not an allowed global by default",
        # AutoGluon >= 1.2 asks for weights_only=False itself, which only the force flag overrides
        lambda e: ((e.v("fastai") or (9,)) <= (2, 7, 18) and _weights_only_torch(e)
                   and (e.forced or (e.v("autogluon.tabular") or (9,))[:2] < (1, 2))),
        "fastai's load_model runs with its checkpoint globals accepted for that call only",
        "install ag_torchfix (or fastai >= 2.8)",
        "AutoGluon 1.1.1 + fastai 2.7.18 and AutoGluon 1.6.3 + fastai 2.7.18 (forced), torch 2.13"),
    KnownFailure(
        "fastai-2.7.19-partial", "NeuralNetFastAI fails to train under TORCH_FORCE_WEIGHTS_ONLY_LOAD: fastai 2.7.19 "
        "and 2.8.0 allowlist only L around load_model (numpy's scalar and dtypes arrived in fastai 2.8.1)",
        "Unsupported global: GLOBAL numpy._core.multiarray.scalar (numpy.core.multiarray.scalar on numpy 1.x)",
        lambda e: e.v("fastai") is not None and (2, 7, 19) <= e.v("fastai")[:3] <= (2, 8, 0) and e.forced,
        "fastai's load_model runs with its checkpoint globals accepted for that call only",
        "install ag_torchfix (or fastai >= 2.8.1)",
        "AutoGluon 1.6.3 + fastai 2.7.19 and AutoGluon 1.2 + fastai 2.7.19 (forced), torch 2.13"),
    KnownFailure(
        "forced-load", "fastai models fail to load under TORCH_FORCE_WEIGHTS_ONLY_LOAD",
        "Can not safely load weights when explicit pickle_module is specified",
        lambda e: e.forced and e.v("fastai") is not None and e.v("autogluon.tabular") is not None,
        "model-internals.pkl loads weights-only (scoped allowlist)", "install ag_torchfix",
        "every stack of the matrix"),
    KnownFailure(
        "full-pickle", "a tampered model-internals.pkl runs code on predict (AutoGluon loads it with full pickle)",
        "(no error: the payload runs)",
        lambda e: e.v("fastai") is not None and e.v("autogluon.tabular") is not None,
        "model-internals.pkl loads weights-only; AutoGluon's other pickles only in strict mode",
        "install ag_torchfix; AG_TORCHFIX_STRICT=1 for the whole predictor", "every stack of the matrix"),
    KnownFailure(
        "pkg-resources", "NeuralNetFastAI is skipped at fit, and saved predictors fail to load: AutoGluon 1.2/1.3 "
        "import pkg_resources, which setuptools 82 removed (81 still ships it, deprecated)",
        "Import fastai failed / No module named 'pkg_resources'",
        lambda e: (e.v("autogluon.tabular") or (0,))[:2] in ((1, 2), (1, 3)) and (e.v("setuptools") or (0,)) >= (82,),
        "", 'pip install "setuptools<81"', "AutoGluon 1.2 and 1.3.1 with setuptools 84.2.1"),
    KnownFailure(
        "torch-untested", "torch outside the range AutoGluon declares or ag_torchfix measured",
        "(no error: behaviour may differ)",
        lambda e: e.v("torch") is not None and (not is_tested("torch", e.versions["torch"])
                                                or (e.torch_pin is not None
                                                    and not satisfies(e.versions["torch"], e.torch_pin))),
        "", "use a torch AutoGluon declares and the compatibility table lists",
        "torch 2.13.0 and 2.14.1 measured"),
)


def examine(*, probe: bool = True) -> dict:
    versions = {"python": platform.python_version()}
    for name in ("torch", "fastai", "fastcore", "fastprogress", "numpy", "pandas", "setuptools"):
        versions[name] = installed_version(name)
    for dist in sorted({d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").lower()
                        .startswith("autogluon")}):
        versions[dist] = installed_version(dist)
    env = Env(versions, trust.platform_forces_weights_only(), autogluon_torch_range())
    hook = _hook_state()
    supported = env.v("torch") is not None and env.v("torch")[:2] >= MIN_TORCH
    usable = fastai_model_usable() if probe and versions.get("autogluon.tabular") else None

    failures = []
    for failure in KNOWN_FAILURES:
        affected = failure.applies(env)
        if failure.id == "pkg-resources" and usable is not None:
            affected = affected or "pkg_resources" in (usable or "")
        if failure.covered and not supported:
            coverage = (f"NOT covered: torch {versions['torch'] or '(missing)'} is older than "
                        f"{'.'.join(map(str, MIN_TORCH))}; secure loading refuses unless you trust the file")
        elif failure.covered:
            where = ("in every process of this environment (start-up hook)" if hook == "installed"
                     else f"only in processes that `import ag_torchfix` first ({hook})")
            coverage = f"covered {where}: {failure.covered}"
        else:
            coverage = f"not something ag_torchfix can fix: {failure.remedy}"
        failures.append({"id": failure.id, "name": failure.title, "error": failure.error, "affected": affected,
                         "coverage": coverage, "remedy": failure.remedy, "measured": failure.measured})
    strict = activation.strict_active()
    package = [f"start-up hook: {hook}",
               f"strict mode (all of AutoGluon's pickles restricted): {'on' if strict else 'off'} "
               "(AG_TORCHFIX_STRICT, ag_torchfix.strict(), install(strict=True))",
               f"torch support: {'yes' if supported else 'no'} (ag_torchfix needs torch >= "
               f"{'.'.join(map(str, MIN_TORCH))})"]
    if usable is not None:
        package.append("AutoGluon's NeuralNetFastAI: " + ("usable" if usable == "" else f"NOT usable here ({usable})"))
    untested = untested_versions(versions)
    if untested:
        package.append("outside the measured matrix: " + ", ".join(untested))
    return {"versions": versions, "failures": failures, "package": package, "trust": trust.describe(),
            "neuralnetfastai_usable": usable == "" if usable is not None else None}


PROBE = (
    "import sys\n"
    "try:\n"
    "    import autogluon.tabular.models.fastainn.tabular_nn_fastai\n"
    "    from autogluon.common.utils.try_import import try_import_fastai\n"
    "    try_import_fastai()\n"
    "except BaseException as exc:\n"
    "    print(f'{type(exc).__name__}: {exc}'.splitlines()[0]); sys.exit(1)\n"
)


def fastai_model_usable(python: str | None = None) -> str:
    """"" when AutoGluon's NeuralNetFastAI can be used here; otherwise the import error it hits."""
    env = {**os.environ, "AG_TORCHFIX_AUTOLOAD": "0"}
    try:
        out = subprocess.run([python or sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                             env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not check: {exc}"
    if out.returncode == 0:
        return ""
    lines = (out.stdout.strip() or out.stderr.strip() or "import failed").splitlines()
    return lines[-1][:300]


def _hook_state() -> str:
    if os.environ.get("AG_TORCHFIX_AUTOLOAD", "").strip() == "0":
        return "turned off by AG_TORCHFIX_AUTOLOAD=0"
    if "_ag_torchfix_autoload" in sys.modules:
        return "installed"
    return "not installed"

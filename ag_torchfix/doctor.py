"""``ag-torchfix doctor``: is this environment affected by the known failures, and is it covered?

Reads installed versions from package metadata only: nothing heavy is imported.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import sys

from . import activation, trust

MIN_TORCH = (2, 6)
LAST_UNSCOPED_FASTAI = (2, 7, 18)  # fastai <= this calls torch.load in load_model without an allowlist


def examine() -> dict:
    versions = {"python": platform.python_version()}
    for name in ("torch", "fastai", "fastcore", "fastprogress", "numpy", "pandas"):
        versions[name] = _version(name)
    for dist in sorted({d.metadata["Name"] for d in md.distributions() if (d.metadata["Name"] or "").lower()
                        .startswith("autogluon")}):
        versions[dist] = _version(dist)
    torch_v, fastai_v = _parse(versions["torch"]), _parse(versions["fastai"])
    forced = trust.platform_forces_weights_only()
    hook = _hook_state()
    active_everywhere = hook == "installed"
    supported = torch_v is not None and torch_v[:2] >= MIN_TORCH
    has_fastai_models = versions.get("autogluon.tabular") is not None and fastai_v is not None

    def coverage(what: str) -> str:
        if not supported:
            return (f"NOT covered: torch {versions['torch'] or '(missing)'} is older than "
                    f"{'.'.join(map(str, MIN_TORCH))}; secure loading refuses unless you trust the file")
        if active_everywhere:
            return f"covered in every process of this environment (start-up hook) {what}"
        return f"covered only in processes that `import ag_torchfix` first ({hook}) {what}"

    weights_only_torch = torch_v is not None and (torch_v[:2] >= (2, 6) or forced)
    training = fastai_v is not None and fastai_v <= LAST_UNSCOPED_FASTAI and weights_only_torch
    failures = [
        {
            "name": "NeuralNetFastAI fails to train: 'Unsupported global: GLOBAL fastcore.foundation.L was not an "
                    "allowed global by default' (fastai <= 2.7.18 with weights-only torch)",
            "affected": training,
            "why": (f"fastai {versions['fastai']} reloads its best checkpoint without an allowlist and torch "
                    f"{versions['torch']} loads weights-only" if training else
                    f"fastai {versions['fastai'] or '(missing)'}, torch {versions['torch'] or '(missing)'}"
                    + (", TORCH_FORCE_WEIGHTS_ONLY_LOAD set" if forced else "")),
            "coverage": coverage("(fastai's checkpoint globals are registered when fastai is imported)")
            if supported or training else "not needed",
        },
        {
            "name": "fastai models fail to load under TORCH_FORCE_WEIGHTS_ONLY_LOAD: 'Can not safely load weights "
                    "when explicit pickle_module is specified'",
            "affected": has_fastai_models and forced,
            "why": "TORCH_FORCE_WEIGHTS_ONLY_LOAD is set" if forced else
                   "TORCH_FORCE_WEIGHTS_ONLY_LOAD is not set (set it and AutoGluon's loader fails)",
            "coverage": coverage("(model-internals.pkl loads weights-only)"),
        },
        {
            "name": "full-pickle loading of fastai models: a tampered model-internals.pkl runs code on predict",
            "affected": has_fastai_models,
            "why": "AutoGluon loads NeuralNetFastAI internals with fastai's load_learner (full pickle)"
                   if has_fastai_models else "autogluon.tabular with fastai is not installed",
            "coverage": coverage("(AutoGluon's other pickles stay full pickle)"),
        },
    ]
    strict = activation.strict_active()
    package = [f"start-up hook: {hook}",
               f"strict mode (all of AutoGluon's pickles restricted): {'on' if strict else 'off'} "
               "(AG_TORCHFIX_STRICT, ag_torchfix.strict(), install(strict=True))",
               f"torch support: {'yes' if supported else 'no'} (ag_torchfix needs torch >= "
               f"{'.'.join(map(str, MIN_TORCH))})"]
    return {"versions": versions, "failures": failures, "package": package, "trust": trust.describe()}


def _hook_state() -> str:
    if os.environ.get("AG_TORCHFIX_AUTOLOAD", "").strip() == "0":
        return "turned off by AG_TORCHFIX_AUTOLOAD=0"
    if "_ag_torchfix_autoload" in sys.modules:
        return "installed"
    return "not installed"


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _parse(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:3])

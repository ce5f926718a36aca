"""Environment switches read by more than one layer."""

from __future__ import annotations

import os

ENV_STRICT = "AG_TORCHFIX_STRICT"


def strict_env_enabled() -> bool:
    """AG_TORCHFIX_STRICT=1/true/yes/on (any case) turns strict mode on for the whole process."""
    return os.environ.get(ENV_STRICT, "").strip().lower() in ("1", "true", "yes", "on")

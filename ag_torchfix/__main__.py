"""``python -m ag_torchfix [status|scan|doctor]``."""

from .cli import main

raise SystemExit(main())

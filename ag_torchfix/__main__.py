"""``python -m ag_torchfix [status|scan|doctor]``."""

from .cli.commands import main

raise SystemExit(main())

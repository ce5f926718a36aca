"""Layer 6, cli: the commands (``ag-torchfix`` / ``python -m ag_torchfix``) and the audits behind them.

``commands`` (argument parsing and output: status, scan, doctor, lock, verify), ``scanner`` (``scan``: files and
predictor directories audited without running anything), ``doctor`` (versions and known failures).
May import: every layer below.

``ag_torchfix.cli`` was the module now called ``ag_torchfix.cli.commands``; its names (``main``) still resolve here.
"""


from ..core.compat import forwarding

__getattr__ = forwarding(__name__, "commands")

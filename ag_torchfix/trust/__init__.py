"""Layer 3, trust: when, and only when, a refused file may be loaded with full pickle.

``rules`` (trusted() blocks, AG_TORCHFIX_TRUST, lock digests), ``lock`` (``ag-torchfix lock`` / ``verify``),
``fallback`` (the one door to full pickle: the bytes trust was decided on are the bytes unpickled).
May import: ``core``, ``formats``.

``ag_torchfix.trust`` was the module now called ``ag_torchfix.trust.rules``; its names still resolve here.
"""


from ..core.compat import forwarding

__getattr__ = forwarding(__name__, "rules")

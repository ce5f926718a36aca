"""Layer 2, policy: what may be loaded, as data with reasons, and the rules that apply it.

``allowlist`` / ``denylist`` (exact names, each with a reason), ``learner_schema`` (the genuine fastai learner,
position by position), ``dispatch`` (what AutoGluon writes at each path), ``value_invariants`` (the values libraries
trust unchecked), ``shims`` (narrow stand-ins for the few calls genuine files need), ``verdicts`` (one verdict for a
scanned pickle).  May import: ``core``, ``formats``.

``ag_torchfix.policy`` was the module now called ``ag_torchfix.policy.verdicts``; its names still resolve here.
"""


from ..core.compat import forwarding

__getattr__ = forwarding(__name__, "verdicts")

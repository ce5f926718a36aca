"""Layer 0, core: facts and mechanisms every layer shares, and nothing else.

``errors`` (typed refusals and warnings), ``scopes`` (per-context scopes behind trust, strict mode and the torch
allowlist), ``patching`` (transparent, reversible patches), ``layout`` (AutoGluon's predictor layout and the modules
the package patches), ``versions`` (measured version facts), ``settings`` (environment switches read by several
layers), ``compat`` (the old module names of the layer packages).  May import: the standard library only (no other ag_torchfix layer).
"""

"""Layer 4, load: the loaders.

``torch_scope`` (an allowlist scoped to one torch.load), ``secure_load`` + ``materialize`` (fastai internals: checked
records, then the real learner built by trusted code), ``strict_unpickler`` + ``strict_mode`` (every other pickle of a
predictor), ``native`` (state handed to native libraries), ``native_sandbox`` + ``forking`` (CatBoost predictions in a
forked child).  May import: ``core``, ``formats``, ``policy``, ``trust``.
"""

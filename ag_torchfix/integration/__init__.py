"""Layer 5, integration: how the loaders reach AutoGluon, fastai and torch.

``activation`` (install / uninstall / status: post-import hooks, the entry point's ``activate``),
``autogluon_patch`` (AutoGluon's fastai model loader), ``import_hooks`` (run a callback when a module is imported).
May import: every layer below (``core``, ``formats``, ``policy``, ``trust``, ``load``).
"""

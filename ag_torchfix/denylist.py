"""Known-dangerous pickle globals: code execution, files, imports, reflection, nested loaders.

The allowlist must never contain any of these (a test enforces it), and the scanner reports a file
that references one as dangerous rather than merely unknown.  Whole modules are listed where every
callable in them is a primitive of that kind; other names are exact.
"""

from __future__ import annotations

# module (exact, or any submodule of it) -> why anything from it is dangerous
DANGEROUS_MODULES: dict[str, str] = {
    "os": "process execution, file system and environment access",
    "posix": "os primitives (process execution, files)",
    "nt": "os primitives (process execution, files)",
    "subprocess": "runs commands",
    "pty": "spawns processes",
    "sys": "interpreter internals (modules, hooks, exit)",
    "shutil": "copies, moves and deletes files",
    "socket": "network access",
    "ctypes": "calls arbitrary native code",
    "importlib": "imports modules by name",
    "runpy": "runs modules and scripts",
    "code": "interactive interpreter: executes source",
    "codeop": "compiles source",
    "pickle": "nested unpickling",
    "_pickle": "nested unpickling",
    "pickletools": "pickle internals",
    "copyreg": "reconstructor registry; _reconstructor calls arbitrary constructors",
    "marshal": "loads code objects",
    "shelve": "pickle-backed files",
    "dill": "nested unpickling of code",
    "cloudpickle": "nested unpickling of code",
    "joblib": "nested unpickling (joblib.load)",
    "types": "builds functions and code objects",
    "webbrowser": "launches programs",
    "multiprocessing": "spawns processes, nested unpickling",
    "asyncio": "subprocess and network primitives",
    "tempfile": "creates files",
    "io": "opens files",
    "_io": "opens files",
    "pathlib": "file reads and writes through Path methods",
    "builtins": "interpreter builtins (only values are listed as safe)",
    "operator": "attrgetter/methodcaller/call reflect on objects",
    "functools": "partial/reduce call arbitrary callables",
    "torch.serialization": "torch.load: nested loading",
    "torch.hub": "downloads and runs code",
    "torch.jit": "loads TorchScript archives",
    "torch.package": "loads packaged code",
    "torch._C": "native internals",
    "numpy.lib.npyio": "numpy.load with pickles",
    "numpy.testing": "runs subprocesses",
    "fastcore.xtras": "run(), file helpers, loads",
    "fastcore.script": "command runners",
    "autogluon.common.loaders": "AutoGluon's load_pkl: nested full-pickle load",
    "autogluon.core.utils.loaders": "AutoGluon's load_pkl: nested full-pickle load",
    "pandas.io": "file readers, read_pickle",
    "sklearn.externals": "vendored joblib",
}

# exact names -> why.  Builtins and a few library functions from otherwise-allowed modules.
DANGEROUS_NAMES: dict[str, str] = {
    "builtins.eval": "evaluates source",
    "builtins.exec": "executes source",
    "builtins.compile": "compiles source",
    "builtins.__import__": "imports modules by name",
    "builtins.open": "opens files",
    "builtins.getattr": "reflection: reaches any attribute (ag_torchfix serves a narrow shim instead)",
    "builtins.setattr": "reflection: sets any attribute",
    "builtins.delattr": "reflection: deletes any attribute",
    "builtins.globals": "reflection on module state",
    "builtins.vars": "reflection on object state",
    "builtins.breakpoint": "starts a debugger",
    "builtins.input": "reads stdin",
    "builtins.help": "runs pydoc",
    "builtins.exit": "exits the interpreter",
    "builtins.quit": "exits the interpreter",
    "builtins.type": "creates classes",
    "builtins.object": "object.__new__ / __reduce_ex__ gadgets",
    "builtins.super": "reflection",
    "builtins.memoryview": "raw memory access",
    "torch.load": "nested loading",
    "torch.save": "writes files",
    "torch.from_file": "reads files",
    "torch.storage.UntypedStorage.from_file": "reads files",
    "numpy.load": "loads pickles",
    "numpy.save": "writes files",
    "numpy.fromfile": "reads files",
    "numpy.memmap": "maps files",
    "numpy.lib.format.read_array": "loads pickles",
    "pandas.read_pickle": "nested unpickling",
    "pandas.io.pickle.read_pickle": "nested unpickling",
    "fastai.learner.load_learner": "nested full-pickle load",
    "fastai.learner.Learner.export": "writes files",
    "fastai.learner.Learner.save": "writes files",
    "fastai.learner.load_model": "loads files",
    "fastai.learner.save_model": "writes files",
    "fastcore.xtras.run": "runs commands",
    "autogluon.common.loaders.load_pkl.load": "nested full-pickle load",
    "autogluon.core.utils.loaders.load_pkl.load": "nested full-pickle load",
}

# Allowed exceptions inside an otherwise dangerous module: values listed in the allowlist.
_ALLOWED_IN_DANGEROUS_MODULES = frozenset(
    {"builtins.bytes", "builtins.slice", "builtins.int", "builtins.float", "builtins.str", "builtins.tuple",
     "builtins.print", "builtins.set", "builtins.complex", "builtins.bytearray", "builtins.bool", "builtins.list",
     "builtins.dict", "builtins.frozenset", "builtins.range", "pathlib.PosixPath", "pathlib.WindowsPath",
     "pathlib.PurePosixPath", "pathlib.PureWindowsPath"}
)


def danger(name: str) -> str | None:
    """Why ``name`` is a known-dangerous global, or None if it is not on the list."""
    if name in DANGEROUS_NAMES:
        return DANGEROUS_NAMES[name]
    if name in _ALLOWED_IN_DANGEROUS_MODULES:
        return None
    module = name
    while "." in module:
        module = module.rsplit(".", 1)[0]
        if module in DANGEROUS_MODULES:
            return DANGEROUS_MODULES[module]
    return None

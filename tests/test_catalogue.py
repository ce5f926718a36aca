"""The catalogue of dangerous callables (``denylist``): data with rules, and what the scanner makes of it.

Every pickle here is built by hand, opcode by opcode (protocols 0, 2 and 4; GLOBAL and STACK_GLOBAL;
Python-2 spellings that pickle maps), so nothing is ever unpickled.
"""

from __future__ import annotations

import ast
import io
import pathlib
import re
import time

import pytest

from ag_torchfix.policy import allowlist, denylist
from ag_torchfix.formats import pickle_scan

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PEERS = ("picklescan", "modelscan", "fickling", "modelaudit")


# --- building pickles ------------------------------------------------------------------------------

def _sbu(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 256
    return b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE


def call_p0(module: str, name: str) -> bytes:
    """Protocol 0: GLOBAL, MARK, TUPLE, REDUCE."""
    return b"c%s\n%s\n(tR." % (module.encode(), name.encode())


def call_p2(module: str, name: str) -> bytes:
    """Protocol 2: GLOBAL, EMPTY_TUPLE, REDUCE."""
    return b"\x80\x02c%s\n%s\n)R." % (module.encode(), name.encode())


def call_p4(module: str, name: str) -> bytes:
    """Protocol 4: STACK_GLOBAL (dotted qualified names allowed), EMPTY_TUPLE, REDUCE."""
    return b"\x80\x04" + _sbu(module) + _sbu(name) + b"\x93)R."


def references_p4(*dotted: str) -> bytes:
    """Protocol 4: a list holding several globals (only referenced, never called)."""
    body = b"".join(_sbu(m) + _sbu(n) + b"\x93" for m, n in (_split(d) for d in dotted))
    return b"\x80\x04](" + body + b"e."


def _split(dotted: str, module_parts: int = 1) -> tuple[str, str]:
    parts = dotted.split(".")
    return ".".join(parts[:module_parts]), ".".join(parts[module_parts:])


def scanned(data: bytes) -> set[str]:
    return set(pickle_scan.scan(io.BytesIO(data)).globals)


def encodings(dotted: str) -> list[bytes]:
    """``dotted`` as GLOBAL at protocols 0 and 2 (module = all but the last part) and as STACK_GLOBAL at
    protocol 4 (module = first part, the rest a dotted qualified name)."""
    module, _, name = dotted.rpartition(".")
    first, rest = _split(dotted)
    return [call_p0(module, name), call_p2(module, name), call_p4(first, rest)]


def assert_flagged(dotted: str) -> None:
    for data in encodings(dotted):
        found = scanned(data)
        assert found == {dotted}, (data, found)
        hit = denylist.lookup(dotted)
        assert hit is not None, f"{dotted} is not flagged"
        assert denylist.danger(dotted), dotted


def assert_not_flagged(dotted: str) -> None:
    for data in encodings(dotted):
        found = scanned(data)
        assert found == {dotted}, (data, found)
        assert denylist.lookup(dotted) is None, f"{dotted}: {denylist.lookup(dotted)}"
        assert denylist.danger(dotted) is None


# --- the data ----------------------------------------------------------------------------------------

def test_entries_are_unique_names_with_a_category_reason_and_source():
    names = [e.name for e in denylist.ENTRIES]
    assert len(names) == len(set(names)), "duplicate entries"
    for e in denylist.ENTRIES:
        assert NAME.match(e.name), f"not a dotted name: {e.name!r}"
        assert e.category in denylist.CATEGORIES, e
        assert e.reason.strip() and "\n" not in e.reason and len(e.reason) < 160, e
        assert e.sources and set(e.sources) <= set(denylist.SOURCES), e
        # ag_torchfix marks what this project adds: never beside a peer that flags the name too
        assert ("ag_torchfix" in e.sources) == (not set(e.sources) & set(PEERS)), e
    for table in (denylist.CATEGORIES, denylist.ALLOWED_INSIDE, denylist.SHIMMED, denylist.NOT_LISTED,
                  denylist.NARROWED, denylist.REFLECTIVE_ATTRIBUTES):
        assert all(v.strip() and "\n" not in v for v in table.values())


def test_every_category_is_used():
    used = {e.category for e in denylist.ENTRIES}
    assert used == set(denylist.CATEGORIES)


def test_summary_counts_add_up():
    s = denylist.summary()
    assert s["entries"] == len(denylist.ENTRIES) == sum(s["by_category"].values())
    assert set(s["by_category"]) == set(denylist.CATEGORIES) and all(s["by_category"].values())
    assert set(s["by_source"]) == set(denylist.SOURCES) and all(s["by_source"].values())
    assert s["by_source"]["picklescan"] >= 60 and s["by_source"]["fickling"] >= 100


def test_the_module_is_pure_data_and_imports_nothing_heavy():
    tree = ast.parse(pathlib.Path(denylist.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported <= {"__future__", "dataclasses", "_compat_pickle"}, imported


def test_no_catalogue_entry_hides_behind_its_own_carve_outs():
    for name in denylist.ALLOWED_INSIDE:
        assert denylist.lookup(name) is None
        assert denylist._prefix_match(name) is not None, f"{name} is not inside a listed prefix"
    for name in denylist.NOT_LISTED:
        assert denylist.lookup(name) is None, name
    for module in denylist.NARROWED:
        assert denylist.lookup(module) is None, module


# --- what the scanner flags ----------------------------------------------------------------------------

KNOWN_MISSES = [
    "cProfile.run", "profile.run", "timeit.timeit", "pdb.run", "bdb.Bdb.run", "trace.Trace.run", "pip.main",
    "ensurepip._run_pip", "venv.create", "pkgutil.resolve_name", "pydoc.pipepager", "uuid._get_command_stdout",
    "imaplib.IMAP4_stream", "idlelib.pyshell.ModifiedInterpreter.runcode", "idlelib.run.Executive.runcode",
    "idlelib.debugger.Debugger.run", "urllib.request.urlopen", "requests.api.get", "http.client.HTTPSConnection",
    "aiohttp.client.ClientSession", "torch.utils.collect_env.run", "torch.utils.bottleneck.__main__.run_cprofile",
    "torch.utils.bottleneck.__main__.run_autograd_prof", "torch._inductor.codecache.compile_file",
]


@pytest.mark.parametrize("name", KNOWN_MISSES)
def test_known_misses_are_dangerous(name):
    assert_flagged(name)


# one name per category, each also checked to land in that category
PER_CATEGORY = {
    denylist.PROCESS: ["posix.system", "subprocess.Popen", "os.execv", "pty.spawn", "fastcore.xtras.run",
                       "threading.Thread", "platform.architecture"],
    denylist.CODE: ["builtins.eval", "builtins.exec", "builtins.compile", "types.CodeType", "runpy._run_code",
                    "marshal.loads", "torch.fx.graph_module.reduce_graph_module", "pandas.eval", "sympy.sympify"],
    denylist.IMPORT: ["builtins.__import__", "builtins.getattr", "importlib.import_module", "operator.attrgetter",
                      "_operator.methodcaller", "functools.reduce", "copyreg.add_extension", "builtins.globals"],
    denylist.FILE: ["builtins.open", "io.open", "_io.FileIO", "shutil.rmtree", "torch.save", "numpy.save",
                    "pathlib.PosixPath.write_text", "fastai.learner.Learner.export",
                    "pandas.core.frame.DataFrame.to_csv", "logging.FileHandler"],
    denylist.NETWORK: ["socket.socket", "ssl.get_server_certificate", "torch.hub.load", "fastcore.net.urlread",
                       "torch.distributed.rpc.rpc_sync"],
    denylist.NESTED: ["pickle.loads", "_pickle.loads", "torch.load", "torch.serialization.load", "numpy.load",
                      "pandas.read_pickle", "pandas.io.pickle.read_pickle", "joblib.load", "dill.loads",
                      "fastai.learner.load_learner", "autogluon.common.loaders.load_pkl.load",
                      "autogluon.core.utils.loaders.load_pkl.load", "sklearn.externals.joblib.load",
                      "autogluon.tabular.models.lgb.lgb_model.LGBModel.load",
                      "autogluon.tabular.predictor.predictor.TabularPredictor.load",
                      "torch.utils._config_module.ConfigModule.load_config", "yaml.unsafe_load"],
    denylist.RUNNER: ["pdb.runcall", "doctest.debug_script", "builtins.breakpoint", "unittest.main",
                      "fastcore.script.call_parse"],
    denylist.NATIVE: ["ctypes.CDLL", "_ctypes.dlopen", "sys.settrace", "mmap.mmap", "torch.ops.load_library",
                      "atexit.register", "signal.signal"],
    denylist.INSTALL: ["pip._internal.cli.main.main", "ensurepip.bootstrap", "setuptools.setup",
                       "distutils.spawn.spawn"],
}


@pytest.mark.parametrize("category", sorted(PER_CATEGORY))
def test_every_category_is_flagged_in_scanned_pickles(category):
    names = PER_CATEGORY[category]
    for name in names:
        assert_flagged(name)
        assert denylist.lookup(name).category == category, (name, denylist.lookup(name))
    found = scanned(references_p4(*names))
    assert found == set(names)
    assert all(denylist.lookup(n) for n in found)


@pytest.mark.parametrize("module, name, normalised", [
    ("__builtin__", "eval", "builtins.eval"),
    ("__builtin__", "getattr", "builtins.getattr"),
    ("__builtin__", "open", "builtins.open"),
    ("__builtin__", "__import__", "builtins.__import__"),
    ("__builtin__", "reduce", "functools.reduce"),
    ("__builtin__", "raw_input", "builtins.raw_input"),
    ("__builtin__", "apply", "builtins.apply"),
    ("cPickle", "loads", "pickle.loads"),
    ("commands", "getoutput", "subprocess.getoutput"),
    ("copy_reg", "add_extension", "copyreg.add_extension"),
    ("httplib", "HTTPSConnection", "http.client.HTTPSConnection"),
    ("urllib2", "urlopen", "urllib.request.urlopen"),
    ("urllib", "urlretrieve", "urllib.request.urlretrieve"),
    ("thread", "start_new_thread", "_thread.start_new_thread"),
])
def test_python2_spellings_are_flagged_as_pickle_maps_them(module, name, normalised):
    for data in (call_p0(module, name), call_p2(module, name)):
        assert scanned(data) == {normalised}
    assert denylist.lookup(normalised), normalised
    assert denylist.lookup(f"{module}.{name}"), "the raw spelling is flagged too"


BENIGN = [
    "builtins.len", "builtins.dict", "builtins.set", "builtins.slice", "builtins.print", "builtins.complex",
    "builtins.object", "builtins.frozenset", "collections.OrderedDict", "collections.defaultdict",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.dtype", "numpy.ndarray",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.device", "torch.Size",
    "torch.serialization._get_layout", "pandas.core.frame.DataFrame", "pandas._libs.internals._unpickle_block",
    # os.path lookalikes: pure path arithmetic, and modules whose names merely start like listed ones
    "posixpath.join", "posixpath.basename", "posixpath.normpath", "ntpath.join", "ntpath.splitext",
    "pathlib.PurePosixPath", "pathlib.PosixPath", "pathlib.WindowsPath", "os_utils.run", "osx.system",
    "subprocessing.Pool", "sockets.open", "picklez.loads", "systemd.daemon", "codecs_extra.open",
    # real submodules whose names collide with listed stdlib modules
    "torch.signal.windows.hann", "torch.profiler.profile", "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor", "pandas._libs.arrays.__pyx_unpickle_NDArrayBacked",
    # values inside otherwise dangerous modules, and names other scanners flag that are not primitives
    "os.stat_result", "posix.stat_result", "zipfile.ZipInfo", "subprocess.CompletedProcess", "uuid.UUID",
    "logging.getLogger", "types.SimpleNamespace", "inspect.Signature", "inspect._empty", "random.Random",
    "datetime.timedelta", "functools.partial", "torch.storage._load_from_bytes", "copyreg._reconstructor",
    "_codecs.encode", "operator.add", "platform.python_version", "http.HTTPStatus", "urllib.parse.ParseResult",
]


@pytest.mark.parametrize("name", BENIGN)
def test_benign_lookalikes_are_not_flagged(name):
    assert_not_flagged(name)


def test_matching_is_on_component_boundaries_and_the_longest_entry_wins():
    assert denylist.lookup("subprocess").name == "subprocess"
    assert denylist.lookup("subprocess.anything.deeper").name == "subprocess"
    assert denylist.lookup("bdb.Bdb.run").name == "bdb"
    assert denylist.lookup("torch.utils.collect_env.run").name == "torch.utils.collect_env"
    assert denylist.lookup("pathlib.PosixPath.write_text").name == "pathlib.PosixPath.write_text"
    assert denylist.lookup("pandas.core.frame.DataFrame.to_pickle").category == denylist.NESTED
    assert denylist.lookup("pandas.core.frame.DataFrame") is None
    assert denylist.lookup("pandas.core.frame.DataFrame.copy") is None
    assert denylist.lookup("subprocessx") is None and denylist.lookup("subprocess_x.run") is None
    assert denylist.lookup("") is None and denylist.lookup(".") is None


def test_carve_outs_are_exact():
    assert denylist.lookup("os.stat_result") is None
    assert denylist.lookup("os.stat_result.__new__").name == "os"
    assert denylist.lookup("zipfile.ZipInfo.from_file").name == "zipfile"
    assert denylist.lookup("torch.serialization._get_layout.x").name == "torch.serialization"


@pytest.mark.parametrize("name, via", [
    ("torch.os.system", "os"),  # a module reached as an attribute of another
    ("numpy.sys.modules", "sys"),
    ("collections._sys.modules", "sys"),
    ("random._os.system", "os"),
    ("fastai.learner.pickle.loads", "pickle"),
    ("torch.serialization.pickle.loads", "torch.serialization"),
    ("fastai.learner.Recorder.__init__.__globals__", "__globals__"),  # reflective attributes
    ("fastai.learner.__builtins__", "__builtins__"),
    ("builtins.len.__self__", "__self__"),
    ("builtins.object.__subclasses__", "__subclasses__"),
    ("collections.OrderedDict.__class__.__base__", "__class__"),
    ("inspect.Signature.__init__.__globals__", "__globals__"),
])
def test_dotted_names_that_walk_to_a_primitive_are_flagged(name, via):
    data = call_p4(*_split(name))
    assert scanned(data) == {name}
    hit = denylist.lookup(name)
    assert hit is not None and hit.name == via, hit


def test_danger_reads_as_category_and_reason():
    text = denylist.danger("posix.system")
    assert text.startswith("process execution: ") and "system" in text
    assert denylist.danger("builtins.len") is None


def test_lookup_is_fast_without_its_cache():
    names = [f"pkg{i}.module{i % 7}.sub.Class{i}.method" for i in range(20000)]
    start = time.perf_counter()
    for name in names:
        denylist._lookup(name)
    assert time.perf_counter() - start < 2.0


# --- the allowlists are curated: the catalogue gives way, never them -----------------------------------

def _allowlisted_names() -> set[str]:
    return ({e.name for e in allowlist.FASTAI_INTERNALS} | {e.name for e in allowlist.STRICT}
            | set(allowlist.SHIMS) | set(allowlist.STRICT_SHIMS) | set(allowlist.DEFAULTDICT_FACTORIES)
            | set(allowlist.STRICT_DEFAULTDICT_FACTORIES) | set(allowlist.STRICT_PARTIAL_FUNCS))


def test_no_allowlisted_name_is_in_the_catalogue():
    hits = {n: denylist.lookup(n).name for n in _allowlisted_names() if denylist.lookup(n)}
    # the one exception: a name served by a narrow shim whose real object is a primitive (see SHIMMED)
    assert set(hits) == set(denylist.SHIMMED), hits
    assert set(denylist.SHIMMED) <= set(allowlist.SHIMS) | set(allowlist.STRICT_SHIMS)


def test_no_torch_weights_only_default_is_in_the_catalogue():
    wou = pytest.importorskip("torch._weights_only_unpickler")
    hits = [n for n in wou._get_allowed_globals() if denylist.lookup(n)]
    assert not hits

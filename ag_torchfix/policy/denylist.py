"""The catalogue of dangerous callables: pickle globals that run commands, execute or import code, touch
files or the network, load nested pickles, or reach into the interpreter.

The scanner calls a file *dangerous* (exit 2) rather than *needs trust* (exit 1) when it names one of
these; the loaders refuse such files either way (they only load allowlisted names).  This list only
raises alarms, so module-wide entries are allowed where essentially everything in a module is such a
primitive (``subprocess``, ``socket``, ``pickle`` ...); elsewhere entries are exact.  ``builtins``,
``collections``, ``numpy`` and ``torch`` are never listed wholesale.

Every entry has a category (``CATEGORIES``), a one-line reason and the sources that flag it:
``picklescan``, ``modelscan``, ``fickling`` and ``modelaudit`` when that scanner's published list flags
the name (or, for a module entry, something inside it), else ``ag_torchfix`` for what this project adds
(torch, fastai, fastcore, AutoGluon, pandas, numpy ... functions that run commands, import, open or
write files, or load pickles).

How a name is matched (``lookup``), on dotted-component boundaries, longest entry first:
- an entry matches itself and anything below it (``subprocess`` matches ``subprocess.Popen``,
  ``bdb.Bdb`` matches ``bdb.Bdb.run``, ``pathlib.Path.write_text`` matches only that method);
- ``ALLOWED_INSIDE`` names are exact carve-outs inside a dangerous prefix (value types);
- pickle resolves dotted names attribute by attribute, so a name that reaches a module through an
  attribute (``torch.os.system``, ``collections._sys.modules``) is judged from that module on
  (``MODULE_ALIASES``), and one that walks through a reflective attribute (``X.__init__.__globals__``,
  ``M.__builtins__``) is dangerous whatever it starts from (``REFLECTIVE_ATTRIBUTES``).

Names other scanners flag that this catalogue deliberately does not list, and modules they flag wholesale
that are narrowed here to their dangerous members, are data too (``NOT_LISTED``, ``NARROWED``).
"""

from __future__ import annotations

from dataclasses import dataclass

PROCESS, CODE, IMPORT, FILE, NETWORK = "process", "code", "import", "file", "network"
NESTED, RUNNER, NATIVE, INSTALL = "nested-load", "runner", "native", "install"
SCANNER = "scanner"

CATEGORIES: dict[str, str] = {
    PROCESS: "process execution: runs commands, spawns processes or threads that run callables",
    CODE: "code execution: evaluates, compiles or builds code from strings or code objects",
    IMPORT: "import & reflection: imports modules by name or reaches arbitrary attributes and namespaces",
    FILE: "file system: opens, reads, writes, deletes or probes files and directories",
    NETWORK: "network: opens connections, downloads, serves or sends data",
    NESTED: "nested deserialization: loads pickles or archives that can themselves run code",
    RUNNER: "debugger, profiler or test runner: executes code or statements it is given",
    NATIVE: "interpreter & native code: foreign functions, raw memory, interpreter hooks and state",
    INSTALL: "package installation: installs packages, builds extensions or creates environments",
    SCANNER: "security tooling: turns a scanner's or a restricted unpickler's protection off, or calls into it",
}

SOURCES = ("picklescan", "modelscan", "fickling", "modelaudit", "ag_torchfix")
_CODES = {"P": "picklescan", "M": "modelscan", "F": "fickling", "A": "modelaudit", "T": "ag_torchfix"}


@dataclass(frozen=True)
class Danger:
    name: str  # exact dotted name, or a module / class prefix
    category: str
    reason: str
    sources: tuple[str, ...]


def _e(name: str, category: str, reason: str, sources: str) -> tuple[Danger, ...]:
    return (Danger(name, category, reason, tuple(_CODES[c] for c in sources)),)


def _g(category: str, reason: str, sources: str, names: str) -> tuple[Danger, ...]:
    """Several names sharing one category, reason and set of sources."""
    return tuple(Danger(n, category, reason, tuple(_CODES[c] for c in sources)) for n in names.split())


def _m(category: str, reason: str, sources: str, owners: str, members: str) -> tuple[Danger, ...]:
    """The same members (methods) on several owners (classes and their public aliases)."""
    return tuple(Danger(f"{o}.{m}", category, reason, tuple(_CODES[c] for c in sources))
                 for o in owners.split() for m in members.split())


# --- the catalogue ----------------------------------------------------------------------------------
ENTRIES: tuple[Danger, ...] = (
    # --- security tooling: no genuine model pickle names a scanner; a pickle that does is switching one off ------
    *_g(SCANNER, "a pickle scanner or restricted unpickler: its hooks can be removed, its allowlists widened", "F",
        "fickling picklescan modelscan modelaudit saferpickle model_unpickler"),
    *_e("ag_torchfix", SCANNER, "this package: uninstall() and trusted() switch its protection off", "T"),
    # --- process execution: the standard library ---------------------------------------------------
    *_e("os", PROCESS, "system, popen, exec*, spawn*, fork and kill, beside file and environment primitives", "PMFA"),
    *_e("posix", PROCESS, "the C module behind os on POSIX: system, exec*, fork, file primitives", "PMFA"),
    *_e("nt", PROCESS, "the C module behind os on Windows: system, startfile, spawn*, file primitives", "PMFA"),
    *_e("subprocess", PROCESS, "runs commands (Popen, run, call, check_output, getoutput)", "PMFA"),
    *_e("_posixsubprocess", PROCESS, "fork_exec, the primitive under subprocess on POSIX", "F"),
    *_e("_winapi", PROCESS, "CreateProcess and handle primitives under subprocess on Windows", "F"),
    *_e("pty", PROCESS, "spawn() runs a program on a pseudo-terminal", "PMFA"),
    *_e("commands", PROCESS, "Python 2 command runner (getoutput); pickle maps the name to subprocess", "PFA"),
    *_e("pexpect", PROCESS, "spawns programs and drives them through a pseudo-terminal", "FA"),
    *_e("pipes", PROCESS, "Template builds and runs shell pipelines", "F"),
    *_e("multiprocessing", PROCESS, "starts processes that run callables; connections unpickle what they receive", "FA"),
    *_e("concurrent.futures.process", PROCESS, "process pool: runs callables in worker processes", "T"),
    *_g(PROCESS, "executor that runs submitted callables on worker processes or threads", "A",
        "concurrent.futures.ProcessPoolExecutor concurrent.futures.ThreadPoolExecutor"),
    *_e("concurrent.futures.thread.ThreadPoolExecutor", PROCESS, "thread pool: runs submitted callables", "T"),
    *_g(PROCESS, "starts a thread that calls the target it is given", "FA", "threading.Thread threading.Timer"),
    *_g(PROCESS, "starts a thread, or interrupts the main one, at the interpreter's lowest level", "FA",
        "_thread.start_new_thread _thread.start_new _thread.interrupt_main"),
    *_e("asyncio", PROCESS, "create_subprocess_exec/shell, connections and servers, runs coroutines", "PMFA"),
    *_e("webbrowser", PROCESS, "launches a browser program on a URL", "PMFA"),
    *_e("antigravity", PROCESS, "importing it opens a web browser", "T"),
    *_e("_osx_support", PROCESS, "build helpers that run commands through os.system/subprocess", "PF"),
    *_e("_aix_support", PROCESS, "build helpers that run commands through subprocess", "PF"),
    *_e("_pyrepl", PROCESS, "REPL internals (3.13+): pagers run commands, the console executes input", "P"),
    *_g(PROCESS, "runs network-configuration commands (ifconfig, ip, arp, netstat ...) to find a MAC address", "PFA",
        "uuid._get_command_stdout uuid._popen uuid.getnode uuid.uuid1 uuid._ifconfig_getnode uuid._ip_getnode "
        "uuid._arp_getnode uuid._lanscan_getnode uuid._netstat_getnode uuid._unix_getnode uuid._netbios_getnode "
        "uuid._ipconfig_getnode uuid._windll_getnode uuid._find_mac_near_keyword uuid._find_mac_under_heading"),
    *_g(PROCESS, "platform query that may run a helper command (file, ver, uname -p) or read executables", "F",
        "platform._syscmd_file platform._syscmd_ver platform.architecture platform.processor "
        "platform._Processor platform.win32_ver platform.uname platform.platform platform.release "
        "platform.version platform.machine platform.node platform.libc_ver"),
    *_g(PROCESS, "platform query that may run a helper command (file, ver, uname -p) or read executables", "FA",
        "platform.system platform.popen"),
    *_e("pydoc", PROCESS, "pager/pipepager run commands, locate() imports by name, help() starts a server", "PFA"),
    *_e("psutil.Popen", PROCESS, "psutil's subprocess.Popen", "T"),
    *_m(PROCESS, "signals, stops or kills another process", "T", "psutil.Process",
        "kill terminate send_signal suspend resume"),

    # --- code execution ----------------------------------------------------------------------------
    *_g(CODE, "evaluates or executes source code", "PMFA",
        "builtins.eval builtins.exec"),
    *_e("builtins.execfile", CODE, "Python 2 execfile: executes a source file (absent in Python 3)", "FA"),
    *_e("builtins.compile", CODE, "compiles source into code objects", "PMFA"),
    *_e("builtins.apply", CODE, "Python 2 call trampoline: apply(f, args) (absent in Python 3)", "PMFA"),
    *_e("builtins.__build_class__", CODE, "runs a class body function to build a class", "FA"),
    *_e("code", CODE, "interactive interpreter: compiles and runs source (InteractiveInterpreter.runcode)", "PFA"),
    *_e("codeop", CODE, "compiles source for the interactive interpreter", "FA"),
    *_e("runpy", CODE, "runs modules and script files (run_module, run_path, _run_code)", "PMFA"),
    *_e("marshal", CODE, "loads code objects from bytes", "FA"),
    *_g(CODE, "builds code objects, functions or closures from raw parts", "PFA",
        "types.CodeType"),
    *_g(CODE, "builds code objects, functions or closures from raw parts", "FA",
        "types.FunctionType types.LambdaType types.CellType"),
    *_e("types.new_class", CODE, "builds a class, running its metaclass and an exec_body callback", "FA"),
    *_g(CODE, "runs code in a subinterpreter (run_string)", "F", "_xxsubinterpreters _interpreters"),
    *_e("tkinter", CODE, "Tk/Tcl interpreter: Tcl eval can exec commands", "T"),
    *_e("_tkinter", CODE, "the Tcl interpreter under tkinter", "F"),
    *_e("inspect.get_annotations", CODE, "evaluates string annotations when eval_str is set", "F"),
    *_e("lib2to3", CODE, "refactoring tool: loads pickled grammars, evals grammar labels, rewrites files", "PFA"),
    *_e("numpy.f2py", CODE, "Fortran wrapper generator: evals expressions, compiles and imports extensions", "PF"),
    *_g(CODE, "executes a source string", "PFA",
        "numpy.testing._private.utils.runstring"),
    *_g(CODE, "executes a source string", "T",
        "numpy.testing.runstring"),
    *_e("numpy.testing._private.extbuild", CODE, "compiles and imports C extension modules from source", "T"),
    *_g(CODE, "pandas expression evaluation: its python engine resolves attributes and calls (CVE-2024-9880)", "FA",
        "pandas.eval pandas.core.computation.eval.eval"),
    *_m(CODE, "evaluates a pandas expression string against the frame (attribute access and calls)", "F",
        "pandas.core.frame.DataFrame pandas.DataFrame",
        "eval"),
    *_m(CODE, "evaluates a pandas expression string against the frame (attribute access and calls)", "T",
        "pandas.core.frame.DataFrame pandas.DataFrame",
        "query"),
    *_g(CODE, "sympify/parse_expr evaluate strings with eval; S(...) is sympify", "T",
        "sympy.sympify sympy.core.sympify.sympify sympy.parse_expr sympy.parsing.sympy_parser.parse_expr "
        "sympy.S sympy.core.singleton.S sympy.core.singleton.SingletonRegistry"),
    *_g(CODE, "generates Python source and execs it", "T", "sympy.lambdify sympy.utilities.lambdify.lambdify"),
    *_g(CODE, "renders templates compiled to Python; an unsandboxed template runs arbitrary expressions", "T",
        "jinja2.Template jinja2.environment.Template"),
    *_m(CODE, "compiles a template string into Python code", "T",
        "jinja2.Environment jinja2.environment.Environment",
        "from_string"),
    *_m(CODE, "compiles a template string into Python code", "F",
        "jinja2.Environment jinja2.environment.Environment",
        "compile"),
    # torch's compilers and code generators
    *_e("torch._dynamo", CODE, "TorchDynamo: rewrites bytecode, evaluates guard expressions, execs generated code", "PF"),
    *_e("torch._inductor", CODE, "TorchInductor: writes generated source, runs compilers, loads the results", "PF"),
    *_e("torch.compile", CODE, "compiles a callable through Dynamo and Inductor (generated code, C++ compilers)", "FA"),
    *_e("torch.jit", CODE, "TorchScript: compiles source, evals type comments, loads archives (jit.load)", "PF"),
    *_e("torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression", CODE,
        "evals a guard expression string", "P"),
    *_g(CODE, "rebuilds an fx GraphModule by exec'ing its pickled Python source", "T",
        "torch.fx.graph_module.reduce_graph_module torch.fx.graph_module.reduce_package_graph_module "
        "torch.fx.graph_module.reduce_deploy_graph_module torch.fx.graph_module._deserialize_graph_module "
        "torch.fx.graph_module._exec_with_source torch.fx.graph_module._forward_from_src "
        "torch.fx.graph_module._method_from_src"),
    *_e("torch.utils.cpp_extension", CODE, "compiles C++/CUDA sources and imports the result (load, load_inline)", "T"),
    # fastcore
    *_g(CODE, "fastcore helper that execs or evals a string", "T",
        "fastcore.basics.exec_local fastcore.basics.eval_type fastcore.basics.exec_new fastcore.basics.exec_import "
        "fastcore.xtras.exec_eval"),
    *_g(CODE, "fastcore helper that loads a module from a file path and runs it", "T",
        "fastcore.xtras.load_mod fastcore.xtras.import_no_init"),

    # --- import & reflection ------------------------------------------------------------------------
    *_e("builtins.__import__", IMPORT, "imports any module by name", "MFA"),
    *_g(IMPORT, "the import machinery exposed on builtins (loads modules by name)", "FA",
        "builtins.__loader__ builtins.__spec__"),
    *_g(IMPORT, "reads, sets or deletes any attribute by name (runs getters and setters)", "PMFA",
        "builtins.getattr"),
    *_g(IMPORT, "reads, sets or deletes any attribute by name (runs getters and setters)", "FA",
        "builtins.setattr builtins.delattr"),
    *_g(IMPORT, "reads, sets or deletes any attribute by name (runs getters and setters)", "F",
        "builtins.hasattr"),
    *_g(IMPORT, "exposes a namespace dict (module globals, locals, an object's __dict__) or its names", "FA",
        "builtins.globals builtins.locals builtins.vars builtins.dir"),
    *_e("builtins.super", IMPORT, "reaches methods along another class's MRO", "FA"),
    *_e("builtins.help", IMPORT, "pydoc help: imports modules by name and pages output", "FA"),
    *_e("builtins.reload", IMPORT, "Python 2 reload (pickle maps it to importlib.reload): re-executes a module", "FA"),
    *_e("__builtins__", IMPORT, "not a module; a name built on it reaches builtins such as eval", "FA"),
    *_e("importlib", IMPORT, "import_module, reload, loaders from file paths, spec execution", "FA"),
    *_g(IMPORT, "the interpreter's import machinery (module creation, exec_module, frozen loaders)", "F",
        "_imp _frozen_importlib _frozen_importlib_external"),
    *_e("imp", IMPORT, "legacy import API: load_source/load_module run files (removed in 3.12)", "F"),
    *_e("zipimport", IMPORT, "imports and runs modules from zip archives", "FA"),
    *_e("pkgutil", IMPORT, "resolve_name and walk_packages import by name; get_data and read_code read files", "PFA"),
    *_e("site", IMPORT, "addsitedir/addpackage execute .pth lines; main() rewrites sys.path", "F"),
    *_g(IMPORT, "reaches every live object, or the objects referring to one", "F",
        "gc.get_objects gc.get_referrers gc.get_referents"),
    *_g(IMPORT, "call or item trampoline: fetches attributes or items by name, or calls what it is given", "PMFA",
        "operator.attrgetter"),
    *_g(IMPORT, "call or item trampoline: fetches attributes or items by name, or calls what it is given", "PFA",
        "operator.itemgetter operator.methodcaller _operator.attrgetter _operator.itemgetter "
        "_operator.methodcaller"),
    *_g(IMPORT, "call or item trampoline: fetches attributes or items by name, or calls what it is given", "FA",
        "operator.getitem _operator.getitem _operator.setitem _operator.delitem _operator.call"),
    *_g(IMPORT, "call or item trampoline: fetches attributes or items by name, or calls what it is given", "F",
        "operator.setitem operator.delitem operator.call operator.__getitem__ operator.__setitem__ "
        "operator.__delitem__ operator.__call__"),
    *_e("functools.reduce", IMPORT, "call trampoline: calls a function repeatedly with values the pickle supplies", "FA"),
    *_g(IMPORT, "copies attributes and __dict__ from one object onto another (a setattr gadget)", "FA",
        "functools.update_wrapper functools.wraps"),
    *_e("types.MethodType", IMPORT, "binds any function to any object", "FA"),
    *_e("types.ModuleType", IMPORT, "fabricates module objects", "FA"),
    *_g(IMPORT, "reflection on frames, closures, members or static attributes", "F",
        "inspect.currentframe inspect.stack inspect.trace inspect.getouterframes inspect.getinnerframes "
        "inspect.getframeinfo inspect.getargvalues inspect.getclosurevars inspect.getmembers "
        "inspect.getmembers_static inspect.getattr_static inspect.getmodule"),
    *_g(IMPORT, "lets EXT opcodes resolve to globals registered at run time, hidden from a scanner", "T",
        "copyreg.add_extension copyreg._extension_registry copyreg._inverted_registry"),
    *_g(IMPORT, "entry point loading: imports a module and resolves an attribute by name", "T",
        "pkg_resources.load_entry_point pkg_resources.EntryPoint.load pkg_resources.EntryPoint.resolve"),
    *_g(CODE, "executes a script from an installed distribution", "T",
        "pkg_resources.run_script pkg_resources.run_main"),
    *_e("logging.config", IMPORT, "dictConfig imports and calls factories by dotted name; listen() applies configs "
        "received on a socket", "FA"),
    *_e("fsspec.registry", IMPORT, "imports filesystem classes by dotted name", "T"),
    *_e("fastai.test_utils", IMPORT, "fastai test helpers: imports modules by name (try_import)", "T"),
    *_e("fastcore.xtras.get_source_link", IMPORT, "imports a package's _modidx module by name", "T"),
    *_e("torch.utils._config_module.ConfigModule", NESTED, "config modules: load_config unpickles bytes", "PF"),
    *_g(NESTED, "a torch config module's load_config: unpickles bytes", "T",
        "torch._functorch.config.load_config torch.fx.experimental._config.load_config "
        "torch._export.config.load_config torch.compiler.config.load_config"),

    # --- file system --------------------------------------------------------------------------------
    *_e("builtins.open", FILE, "opens any file for reading or writing", "PMFA"),
    *_e("builtins.file", FILE, "Python 2 file type: opens files (absent in Python 3)", "FA"),
    *_e("builtins.license", FILE, "site's license printer: reads the LICENSE file and pages it", "FA"),
    *_g(FILE, "opens a file by path", "FA",
        "io.open"),
    *_g(FILE, "opens a file by path", "T",
        "io.open_code gzip.GzipFile bz2.BZ2File lzma.LZMAFile"),
    *_g(FILE, "opens a file by path", "F",
        "io.FileIO _io.open _io.open_code"),
    *_g(FILE, "opens a file by path", "PF",
        "_io.FileIO"),
    *_g(FILE, "opens a file by path", "A",
        "codecs.open gzip.open bz2.open lzma.open"),
    *_e("shutil", FILE, "copies, moves, deletes and archives files and trees; which() searches PATH", "PMFA"),
    *_e("tempfile", FILE, "creates files and directories", "FA"),
    *_e("filecmp", FILE, "reads and compares files and directories", "FA"),
    *_e("fileinput", FILE, "reads files, and rewrites them in place", "FA"),
    *_e("glob", FILE, "lists the file system", "FA"),
    *_e("linecache", FILE, "reads source files (and asks module loaders for source)", "F"),
    *_e("tarfile", FILE, "reads archives and extracts them onto the file system", "FA"),
    *_e("zipfile", FILE, "opens zip archives, extracts and writes them", "FA"),
    *_g(FILE, "opens and writes database files; sqlite can load native extensions", "FA",
        "sqlite3 _sqlite3"),
    *_g(FILE, "opens and writes database files; sqlite can load native extensions", "T",
        "dbm"),
    *_g(FILE, "compiles source files and writes byte-code files", "FA", "compileall py_compile"),
    *_e("distutils", INSTALL, "build machinery: spawns compilers, copies and writes files (file_util, spawn)", "PFA"),
    *_e("syslog", FILE, "writes to the system log", "FA"),
    *_e("winreg", FILE, "reads and writes the Windows registry", "T"),
    *_g(FILE, "opens log files by path", "PFA",
        "logging.FileHandler"),
    *_g(FILE, "opens log files by path", "FA",
        "logging.basicConfig"),
    *_e("logging.handlers", FILE, "handlers that write files, send over sockets, SMTP, HTTP or syslog", "FA"),
    *_g(FILE, "cookie jar that loads and saves a cookie file", "FA",
        "http.cookiejar.FileCookieJar http.cookiejar.MozillaCookieJar http.cookiejar.LWPCookieJar"),
    *_g(FILE, "reads source files", "F",
        "inspect.getsource inspect.getsourcelines inspect.getsourcefile inspect.getfile inspect.findsource "
        "inspect.getcomments"),
    *_g(FILE, "probes the file system (existence, size, times, links) or the environment", "A",
        "posixpath.exists posixpath.lexists posixpath.isfile posixpath.isdir posixpath.islink "
        "posixpath.ismount posixpath.getsize posixpath.getatime posixpath.getmtime posixpath.getctime "
        "posixpath.samefile posixpath.sameopenfile posixpath.realpath posixpath.abspath posixpath.expanduser "
        "posixpath.expandvars ntpath.exists ntpath.lexists ntpath.isfile ntpath.isdir ntpath.islink "
        "ntpath.ismount ntpath.isjunction ntpath.getsize ntpath.getatime ntpath.getmtime ntpath.getctime "
        "ntpath.samefile ntpath.sameopenfile ntpath.realpath ntpath.abspath ntpath.expanduser "
        "ntpath.expandvars"),
    *_g(FILE, "probes the file system (existence, size, times, links) or the environment", "T",
        "genericpath.exists genericpath.isfile genericpath.isdir genericpath.getsize genericpath.getatime "
        "genericpath.getmtime genericpath.getctime genericpath.samefile genericpath.sameopenfile"),
    *_m(FILE, "pathlib method that reads, writes, deletes, links or lists files", "T",
        "pathlib.Path pathlib.PosixPath pathlib.WindowsPath",
        "open read_text read_bytes write_text write_bytes touch mkdir rmdir unlink rename replace symlink_to "
        "hardlink_to link_to chmod lchmod iterdir rglob readlink"),
    *_m(FILE, "pathlib method that reads, writes, deletes, links or lists files", "F",
        "pathlib.Path pathlib.PosixPath pathlib.WindowsPath",
        "glob"),
    *_m(FILE, "fastcore patch on pathlib.Path that reads, writes, deletes or lists files", "T",
        "pathlib.Path pathlib.PosixPath pathlib.WindowsPath",
        "readlines read_json mk_write write_json mkdir_perms ls delete"),
    *_m(NESTED, "older fastcore's patch on pathlib.Path: pickles to or unpickles from the path", "T",
        "pathlib.Path pathlib.PosixPath pathlib.WindowsPath", "load save"),
    # numpy
    *_g(FILE, "writes arrays to a file path", "T",
        "numpy.save numpy.savez numpy.savez_compressed numpy.savetxt numpy.lib.format.write_array "
        "numpy.ndarray.tofile numpy.ndarray.dump"),
    *_g(FILE, "reads or maps a file by path", "T",
        "numpy.fromfile numpy.loadtxt numpy.genfromtxt numpy.fromregex numpy.memmap numpy.lib.format.open_memmap "
        "numpy.rec.fromfile numpy._core.records.fromfile numpy.core.records.fromfile numpy._core.memmap "
        "numpy.core.memmap"),
    # pandas
    *_m(FILE, "writes the frame to a path, buffer or database", "T",
        "pandas.core.frame.DataFrame pandas.DataFrame",
        "to_csv to_excel to_json to_html to_xml to_parquet to_feather to_orc to_stata to_sql to_hdf to_clipboard "
        "to_markdown to_latex to_string"),
    *_m(FILE, "writes the series to a path, buffer or database", "T",
        "pandas.core.series.Series pandas.Series",
        "to_csv to_excel to_json to_sql to_hdf to_clipboard to_markdown to_latex to_string"),
    *_m(FILE, "writes the frame or series to a path, buffer or database", "T",
        "pandas.core.generic.NDFrame",
        "to_csv to_excel to_json to_sql to_hdf to_clipboard to_latex"),
    *_g(FILE, "reads a file, URL or database into a frame", "T",
        "pandas.read_csv pandas.read_table pandas.read_fwf pandas.read_excel pandas.read_json pandas.read_html "
        "pandas.read_xml pandas.read_parquet pandas.read_feather pandas.read_orc pandas.read_stata pandas.read_sas "
        "pandas.read_spss pandas.read_sql pandas.read_sql_query pandas.read_sql_table pandas.read_gbq "
        "pandas.ExcelFile pandas.ExcelWriter"),
    *_g(FILE, "pandas reader/writer module: opens files, URLs or databases", "T",
        "pandas.io.common pandas.io.parsers pandas.io.excel pandas.io.json pandas.io.html pandas.io.xml "
        "pandas.io.parquet pandas.io.feather_format pandas.io.orc pandas.io.stata pandas.io.sas pandas.io.spss "
        "pandas.io.sql pandas.io.gbq pandas.io.api"),
    *_g(PROCESS, "clipboard access through xclip/xsel/pbcopy subprocesses", "T",
        "pandas.io.clipboard pandas.io.clipboards pandas.read_clipboard"),
    # torch
    *_g(FILE, "writes a file", "T", "torch.save torch.onnx.export torch.export.save"),
    *_e("torch.from_file", FILE, "maps a file by path into a tensor", "T"),
    *_m(FILE, "maps a file by path into a storage", "T",
        "torch.UntypedStorage torch.TypedStorage torch.storage.UntypedStorage torch.storage.TypedStorage "
        "torch.ByteStorage torch.DoubleStorage torch.FloatStorage torch.HalfStorage torch.LongStorage "
        "torch.IntStorage torch.ShortStorage torch.CharStorage torch.BoolStorage torch.BFloat16Storage "
        "torch.ComplexDoubleStorage torch.ComplexFloatStorage torch.QUInt8Storage torch.QInt8Storage "
        "torch.QInt32Storage torch.QUInt4x2Storage torch.QUInt2x4Storage", "from_file"),
    *_e("torch.utils.tensorboard", FILE, "SummaryWriter creates directories and writes event files", "T"),
    *_e("torch.utils.hipify", FILE, "rewrites source trees in place", "T"),
    # fastai / fastcore
    *_g(FILE, "fastai save/export: writes files", "T",
        "fastai.learner.Learner.save fastai.learner.Learner.export fastai.learner.save_model "
        "fastai.text.learner.TextLearner.save_encoder"),
    *_e("fastai.callback.tracker.SaveModelCallback", FILE, "writes model files during training", "T"),
    *_g(FILE, "fastcore helper that opens, lists, creates, extracts or writes files", "T",
        "fastcore.xtras.open_file fastcore.xtras.maybe_open fastcore.xtras.walk fastcore.xtras.globtastic "
        "fastcore.xtras.pglob fastcore.xtras.mkdir fastcore.xtras.image_size fastcore.xtras.bunzip "
        "fastcore.xtras.untar_dir fastcore.xtras.atomic_save fastcore.xtras.parse_env fastcore.xtras.join_path_file"),
    *_e("fastcore.shutil", FILE, "fastcore's wrappers of shutil: copy, move, rmtree", "F"),
    *_e("fastcore.tools", FILE, "file-editing and command tools (run_cmd, sed, create, str_replace)", "T"),
    *_e("fsspec.core", FILE, "opens local and remote files by URL", "T"),
    *_e("fsspec.implementations", FILE, "filesystem backends: local, HTTP, FTP, SFTP, zip ...", "T"),
    *_e("fsspec.spec.AbstractFileSystem", FILE, "filesystem object: every method reads, writes or lists files", "T"),
    *_g(FILE, "opens local or remote files by URL", "A",
        "fsspec.open"),
    *_g(FILE, "opens local or remote files by URL", "T",
        "fsspec.open_files fsspec.open_local fsspec.filesystem fsspec.url_to_fs"),
    *_g(FILE, "reads or writes array and matrix files", "T", "scipy.io"),
    *_e("networkx.readwrite", FILE, "graph readers and writers (gpickle loads pickles in networkx < 3)", "T"),
    *_g(NESTED, "networkx 2 gpickle: pickle load and dump by path", "T",
        "networkx.read_gpickle networkx.write_gpickle"),
    *_m(FILE, "reads or writes the booster's model file", "T",
        "xgboost.core.Booster xgboost.Booster "
        "xgboost.sklearn.XGBModel xgboost.sklearn.XGBClassifier xgboost.sklearn.XGBRegressor",
        "save_model load_model"),
    *_m(FILE, "writes the booster's model file", "T", "lightgbm.basic.Booster lightgbm.Booster", "save_model"),
    *_m(FILE, "reads or writes the CatBoost model file", "T",
        "catboost.core.CatBoost catboost.core.CatBoostClassifier catboost.core.CatBoostRegressor "
        "catboost.CatBoost catboost.CatBoostClassifier catboost.CatBoostRegressor",
        "save_model load_model"),
    *_g(FILE, "scikit-learn dataset file reader/writer or cache deleter", "T",
        "sklearn.datasets.load_svmlight_file sklearn.datasets.load_svmlight_files sklearn.datasets.dump_svmlight_file "
        "sklearn.datasets.load_files sklearn.datasets.clear_data_home"),

    # --- network ------------------------------------------------------------------------------------
    *_g(NETWORK, "sockets: connect, listen, send and receive", "PMFA",
        "socket"),
    *_g(NETWORK, "sockets: connect, listen, send and receive", "F",
        "_socket"),
    *_g(NETWORK, "TLS sockets; get_server_certificate connects out; contexts read certificate files", "PFA",
        "ssl"),
    *_g(NETWORK, "TLS sockets; get_server_certificate connects out; contexts read certificate files", "F",
        "_ssl"),
    *_g(NETWORK, "waits on sockets and file descriptors", "FA", "select selectors"),
    *_e("httplib", NETWORK, "Python 2 HTTP client (pickle maps it to http.client)", "PMF"),
    *_g(NETWORK, "HTTP client and server (the server can run CGI scripts)", "FA",
        "http.client"),
    *_g(NETWORK, "HTTP client and server (the server can run CGI scripts)", "FA",
        "http.server"),
    *_g(NETWORK, "fetches URLs (urlopen, urlretrieve, openers)", "PFA",
        "urllib.request"),
    *_g(NETWORK, "fetches URLs (urlopen, urlretrieve, openers)", "FA",
        "urllib2"),
    *_g(NETWORK, "fetches URLs (urlopen, urlretrieve, openers)", "FA",
        "urllib.robotparser"),
    *_g(NETWORK, "mail, news, file transfer or remote terminal client", "FA",
        "smtplib poplib nntplib ftplib telnetlib"),
    *_g(NETWORK, "mail, news, file transfer or remote terminal client", "PFA",
        "imaplib"),
    *_g(NETWORK, "mail, news, file transfer or remote terminal client", "T",
        "smtpd"),
    *_g(NETWORK, "network servers and RPC", "FA",
        "socketserver xmlrpc"),
    *_g(NETWORK, "network servers and RPC", "T",
        "wsgiref.simple_server asyncore asynchat"),
    *_g(NETWORK, "sends HTTP requests", "PMFA",
        "requests.api"),
    *_g(NETWORK, "sends HTTP requests", "FA",
        "requests.sessions requests.adapters requests.get requests.post requests.put requests.patch "
        "requests.delete requests.head requests.options requests.request requests.session requests.Session"),
    *_e("aiohttp", NETWORK, "asynchronous HTTP client and server", "PMFA"),
    *_g(NETWORK, "HTTP connection pools: send requests", "T",
        "urllib3.poolmanager urllib3.connectionpool urllib3.connection urllib3.PoolManager urllib3.ProxyManager "
        "urllib3.HTTPConnectionPool urllib3.HTTPSConnectionPool urllib3.connection_from_url urllib3.request"),
    *_e("boto3", NETWORK, "AWS SDK: S3 downloads and uploads, any AWS API call", "T"),
    *_g(NETWORK, "downloads files from the Hugging Face Hub", "T",
        "huggingface_hub.hf_hub_download huggingface_hub.snapshot_download huggingface_hub.file_download "
        "huggingface_hub._snapshot_download huggingface_hub.HfApi huggingface_hub.hf_api.HfApi"),
    *_e("torch.hub", NETWORK, "downloads repositories and weights; load() runs the repository's hubconf.py", "FA"),
    *_e("torch.utils.model_zoo", NETWORK, "load_url downloads and torch.loads weights", "T"),
    *_g(NETWORK, "a module whose forward runs on a remote RPC worker", "T",
        "torch.distributed.nn.RemoteModule torch.distributed.nn.api.remote_module"),
    *_e("torch.distributed.rpc", NETWORK, "runs functions on remote workers (rpc_sync, rpc_async, remote)", "A"),
    *_g(NETWORK, "opens a process-group store or connection", "T",
        "torch.distributed.init_process_group torch.distributed.distributed_c10d.init_process_group "
        "torch.distributed.TCPStore torch.distributed.FileStore torch.distributed.rendezvous"),
    *_e("numpy.lib._datasource", NETWORK, "DataSource opens and caches URLs", "T"),
    *_e("fastai.data.external", NETWORK, "downloads and extracts datasets (untar_data)", "T"),
    *_g(NETWORK, "downloads URLs to files", "T",
        "fastai.vision.utils.download_images fastai.vision.utils.download_url fastdownload"),
    *_e("fastcore.net", NETWORK, "urlopen, urlread, urlsave, download_url", "T"),
    *_g(NETWORK, "runs a command on a remote host over ssh or rsync", "T",
        "fastcore.xtras.ssh fastcore.xtras.rsync_multi"),
    *_g(NETWORK, "downloads a dataset from the internet", "T",
        "sklearn.datasets.fetch_openml sklearn.datasets.fetch_california_housing sklearn.datasets.fetch_covtype "
        "sklearn.datasets.fetch_kddcup99 sklearn.datasets.fetch_lfw_pairs sklearn.datasets.fetch_lfw_people "
        "sklearn.datasets.fetch_olivetti_faces sklearn.datasets.fetch_rcv1 sklearn.datasets.fetch_species_distributions "
        "sklearn.datasets.fetch_20newsgroups sklearn.datasets.fetch_20newsgroups_vectorized sklearn.datasets.fetch_file"),
    *_e("autogluon.common.utils.s3_utils", NETWORK, "AutoGluon's S3 downloads and uploads", "T"),

    # --- nested deserialization ----------------------------------------------------------------------
    *_g(NESTED, "unpickles, so a nested payload runs with full pickle", "PMFA",
        "pickle _pickle"),
    *_g(NESTED, "unpickles, so a nested payload runs with full pickle", "T",
        "cPickle"),
    *_e("shelve", NESTED, "pickle-backed database files", "FA"),
    *_e("dill", NESTED, "unpickles, including code objects and whole sessions", "FA"),
    *_e("cloudpickle", NESTED, "rebuilds functions and classes from code objects; subimport imports by name", "PFA"),
    *_e("joblib", NESTED, "joblib.load unpickles; Parallel runs callables in processes; Memory caches pickles", "FA"),
    *_e("sklearn.externals", NESTED, "old scikit-learn's vendored joblib (joblib.load)", "T"),
    *_e("jsonpickle", NESTED, "decodes JSON into arbitrary objects, importing classes by name", "T"),
    *_g(NESTED, "YAML loading with Python tags: constructs objects and calls callables by name", "T",
        "yaml.load yaml.load_all yaml.unsafe_load yaml.unsafe_load_all yaml.full_load yaml.full_load_all "
        "yaml.Loader yaml.UnsafeLoader yaml.FullLoader yaml.loader.Loader yaml.loader.UnsafeLoader "
        "yaml.loader.FullLoader yaml.constructor.UnsafeConstructor yaml.constructor.FullConstructor"),
    *_e("torch.load", NESTED, "loads a torch file; with weights_only=False it is full pickle", "FA"),
    *_e("torch.serialization", NESTED, "torch.load and friends; add_safe_globals widens the weights-only allowlist", "P"),
    *_e("torch.package", NESTED, "imports code packaged in an archive", "T"),
    *_e("torch.export.load", NESTED, "loads an exported program archive", "T"),
    *_e("torch.distributed.checkpoint", NESTED, "loads checkpoints whose metadata is pickled", "T"),
    *_g(NESTED, "decoder handlers that unpickle or torch.load sample bytes", "P",
        "torch.utils.data.datapipes.utils.decoder.basichandlers"),
    *_g(NESTED, "decoder handlers that unpickle or torch.load sample bytes", "T",
        "torch.utils.data.datapipes.utils.decoder.Decoder"),
    *_g(NESTED, "loads .npy/.npz files; object arrays are unpickled when allow_pickle is set", "T",
        "numpy.load numpy.lib.npyio numpy.lib._npyio_impl numpy.lib.format.read_array"),
    *_g(NESTED, "unpickles a file or buffer", "T",
        "pandas.read_pickle pandas.compat.pickle_compat"),
    *_g(NESTED, "unpickles a file or buffer", "F",
        "pandas.io.pickle"),
    *_m(NESTED, "pickles the frame to a path", "T",
        "pandas.core.frame.DataFrame pandas.DataFrame pandas.core.series.Series pandas.Series pandas.core.generic.NDFrame",
        "to_pickle"),
    *_g(NESTED, "HDF5 store: object columns are pickled", "T", "pandas.read_hdf pandas.io.pytables pandas.HDFStore"),
    *_g(NESTED, "fastai loader: torch.load or unpickle a file", "T",
        "fastai.learner.load_learner fastai.learner.load_model fastai.learner.Learner.load "
        "fastai.text.learner.load_model_text fastai.text.learner.TextLearner.load "
        "fastai.text.learner.TextLearner.load_encoder fastai.text.learner.TextLearner.load_pretrained "
        "fastai.text.core.load_tokenized_csv fastai.text.core.Tokenizer.from_folder fastai.text.core.Tokenizer.from_df"),
    *_g(NESTED, "fastcore pickle helpers", "T", "fastcore.xtras.load_pickle fastcore.xtras.save_pickle"),
    *_g(NESTED, "AutoGluon loaders: load_pkl unpickles, load_pd/load_zip read files and URLs", "T",
        "autogluon.common.loaders autogluon.core.utils.loaders"),
    *_g(FILE, "AutoGluon savers: write pickles and files", "T", "autogluon.common.savers autogluon.core.utils.savers"),
    # AutoGluon classes (the strict allowlist's, their bases and public aliases) with the loaders, savers
    # and deleters they define or inherit: the class is a value, ``Class.load`` reached by a dotted name is not
    *_m(NESTED, "AutoGluon loader: unpickles a predictor directory from a path", "T",
        "autogluon.tabular.predictor.predictor.TabularPredictor autogluon.tabular.TabularPredictor",
        "load _load load_data_internal"),
    *_m(FILE, "AutoGluon method that writes, compiles, copies or deletes predictor files", "T",
        "autogluon.tabular.predictor.predictor.TabularPredictor autogluon.tabular.TabularPredictor",
        "save clone clone_for_deployment delete_models save_space"),
    *_m(FILE, "AutoGluon method that writes, compiles, copies or deletes predictor files", "F",
        "autogluon.tabular.predictor.predictor.TabularPredictor autogluon.tabular.TabularPredictor",
        "compile"),
    *_m(NESTED, "AutoGluon loader: unpickles a learner or its trainer from a path", "T",
        "autogluon.core.learner.abstract_learner.AbstractLearner "
        "autogluon.tabular.learner.abstract_learner.AbstractTabularLearner "
        "autogluon.tabular.learner.default_learner.DefaultLearner",
        "load load_info load_trainer"),
    *_m(FILE, "AutoGluon saver: pickles a learner or its trainer to a path", "T",
        "autogluon.core.learner.abstract_learner.AbstractLearner "
        "autogluon.tabular.learner.abstract_learner.AbstractTabularLearner "
        "autogluon.tabular.learner.default_learner.DefaultLearner",
        "save save_info save_trainer"),
    *_m(NESTED, "AutoGluon loader: unpickles a trainer or one of its models from a path", "T",
        "autogluon.core.trainer.abstract_trainer.AbstractTrainer "
        "autogluon.tabular.trainer.abstract_trainer.AbstractTabularTrainer autogluon.tabular.trainer.auto_trainer.AutoTrainer",
        "load load_info load_model"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of trainer and model files", "T",
        "autogluon.core.trainer.abstract_trainer.AbstractTrainer "
        "autogluon.tabular.trainer.abstract_trainer.AbstractTabularTrainer autogluon.tabular.trainer.auto_trainer.AutoTrainer",
        "save save_info save_model"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of trainer and model files", "F",
        "autogluon.tabular.trainer.abstract_trainer.AbstractTabularTrainer autogluon.tabular.trainer.auto_trainer.AutoTrainer",
        "compile"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of trainer and model files", "T",
        "autogluon.tabular.trainer.abstract_trainer.AbstractTabularTrainer autogluon.tabular.trainer.auto_trainer.AutoTrainer",
        "delete_models"),
    *_m(NESTED, "AutoGluon loader: unpickles a bagged model, its children or out-of-fold data", "T",
        "autogluon.core.models.ensemble.bagged_ensemble_model.BaggedEnsembleModel "
        "autogluon.core.models.ensemble.stacker_ensemble_model.StackerEnsembleModel "
        "autogluon.core.models.ensemble.weighted_ensemble_model.WeightedEnsembleModel",
        "load load_info load_learning_curves load_child load_model_base load_oof"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of bagged model files", "T",
        "autogluon.core.models.ensemble.bagged_ensemble_model.BaggedEnsembleModel "
        "autogluon.core.models.ensemble.stacker_ensemble_model.StackerEnsembleModel "
        "autogluon.core.models.ensemble.weighted_ensemble_model.WeightedEnsembleModel",
        "save save_info save_learning_curves save_child save_model_base delete_from_disk"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of bagged model files", "F",
        "autogluon.core.models.ensemble.bagged_ensemble_model.BaggedEnsembleModel "
        "autogluon.core.models.ensemble.stacker_ensemble_model.StackerEnsembleModel "
        "autogluon.core.models.ensemble.weighted_ensemble_model.WeightedEnsembleModel",
        "compile"),
    *_m(NESTED, "AutoGluon loader: unpickles a model from a path", "T",
        "autogluon.core.models.abstract.abstract_model.AbstractModel "
        "autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model.GreedyWeightedEnsembleModel "
        "autogluon.tabular.models.catboost.catboost_model.CatBoostModel "
        "autogluon.tabular.models.fastainn.tabular_nn_fastai.NNFastAiTabularModel "
        "autogluon.tabular.models.knn.knn_model.KNNModel autogluon.tabular.models.lgb.lgb_model.LGBModel "
        "autogluon.tabular.models.lr.lr_model.LinearModel autogluon.tabular.models.rf.rf_model.RFModel "
        "autogluon.tabular.models.tabular_nn.torch.tabular_nn_torch.TabularNeuralNetTorchModel "
        "autogluon.tabular.models.xgboost.xgboost_model.XGBoostModel autogluon.tabular.models.xt.xt_model.XTModel",
        "load load_info load_learning_curves"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of model files", "T",
        "autogluon.core.models.abstract.abstract_model.AbstractModel "
        "autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model.GreedyWeightedEnsembleModel "
        "autogluon.tabular.models.catboost.catboost_model.CatBoostModel "
        "autogluon.tabular.models.fastainn.tabular_nn_fastai.NNFastAiTabularModel "
        "autogluon.tabular.models.knn.knn_model.KNNModel autogluon.tabular.models.lgb.lgb_model.LGBModel "
        "autogluon.tabular.models.lr.lr_model.LinearModel autogluon.tabular.models.rf.rf_model.RFModel "
        "autogluon.tabular.models.tabular_nn.torch.tabular_nn_torch.TabularNeuralNetTorchModel "
        "autogluon.tabular.models.xgboost.xgboost_model.XGBoostModel autogluon.tabular.models.xt.xt_model.XTModel",
        "save save_info save_learning_curves delete_from_disk"),
    *_m(FILE, "AutoGluon saver, compiler or deleter of model files", "F",
        "autogluon.core.models.abstract.abstract_model.AbstractModel "
        "autogluon.core.models.greedy_ensemble.greedy_weighted_ensemble_model.GreedyWeightedEnsembleModel "
        "autogluon.tabular.models.catboost.catboost_model.CatBoostModel "
        "autogluon.tabular.models.fastainn.tabular_nn_fastai.NNFastAiTabularModel "
        "autogluon.tabular.models.knn.knn_model.KNNModel autogluon.tabular.models.lgb.lgb_model.LGBModel "
        "autogluon.tabular.models.lr.lr_model.LinearModel autogluon.tabular.models.rf.rf_model.RFModel "
        "autogluon.tabular.models.tabular_nn.torch.tabular_nn_torch.TabularNeuralNetTorchModel "
        "autogluon.tabular.models.xgboost.xgboost_model.XGBoostModel autogluon.tabular.models.xt.xt_model.XTModel",
        "compile"),
    *_m(NESTED, "AutoGluon model compiler: load() reads the compiled model (native ones unpickle it)", "T",
        "autogluon.tabular.models.rf.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.rf.compilers.native.RFNativeCompiler "
        "autogluon.tabular.models.rf.compilers.onnx.RFOnnxCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.TabularNeuralNetTorchNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.onnx.TabularNeuralNetTorchOnnxCompiler",
        "load"),
    *_m(FILE, "AutoGluon model compiler: compiles and writes model files", "T",
        "autogluon.tabular.models.rf.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.rf.compilers.native.RFNativeCompiler "
        "autogluon.tabular.models.rf.compilers.onnx.RFOnnxCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.TabularNeuralNetTorchNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.onnx.TabularNeuralNetTorchOnnxCompiler",
        "save"),
    *_m(FILE, "AutoGluon model compiler: compiles and writes model files", "F",
        "autogluon.tabular.models.rf.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.rf.compilers.native.RFNativeCompiler "
        "autogluon.tabular.models.rf.compilers.onnx.RFOnnxCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.AbstractNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.native.TabularNeuralNetTorchNativeCompiler "
        "autogluon.tabular.models.tabular_nn.compilers.onnx.TabularNeuralNetTorchOnnxCompiler",
        "compile"),
    *_m(FILE, "AutoGluon feature generator: pickles itself to a path", "T",
        "autogluon.features.generators.abstract.AbstractFeatureGenerator "
        "autogluon.features.generators.astype.AsTypeFeatureGenerator "
        "autogluon.features.generators.auto_ml_pipeline.AutoMLPipelineFeatureGenerator "
        "autogluon.features.generators.binned.BinnedFeatureGenerator "
        "autogluon.features.generators.category.CategoryFeatureGenerator "
        "autogluon.features.generators.datetime.DatetimeFeatureGenerator "
        "autogluon.features.generators.drop_duplicates.DropDuplicatesFeatureGenerator "
        "autogluon.features.generators.drop_unique.DropUniqueFeatureGenerator "
        "autogluon.features.generators.fillna.FillNaFeatureGenerator "
        "autogluon.features.generators.identity.IdentityFeatureGenerator "
        "autogluon.features.generators.label_encoder.LabelEncoderFeatureGenerator "
        "autogluon.features.generators.memory_minimize.CategoryMemoryMinimizeFeatureGenerator "
        "autogluon.features.generators.one_hot_encoder.OneHotEncoderFeatureGenerator "
        "autogluon.features.generators.text_ngram.TextNgramFeatureGenerator "
        "autogluon.features.generators.text_special.TextSpecialFeatureGenerator",
        "save"),
    *_m(NESTED, "fastai learner: loads weights with torch.load", "T", "fastai.tabular.learner.TabularLearner", "load"),
    *_m(FILE, "fastai learner: writes the model or the whole pickled learner", "T",
        "fastai.tabular.learner.TabularLearner", "save export"),

    # --- debuggers, profilers and test runners --------------------------------------------------------
    *_g(RUNNER, "debugger: runs statements and functions under trace (run, runeval, runcall, runctx)", "PMFA",
        "bdb pdb"),
    *_g(RUNNER, "profiler: run() and runctx() exec a statement string", "PFA", "cProfile profile"),
    *_e("timeit", RUNNER, "compiles and runs statement strings (timeit, repeat, Timer)", "PFA"),
    *_e("trace", RUNNER, "runs code under tracing (Trace.run, runctx, runfunc) and writes coverage files", "PFA"),
    *_e("doctest", RUNNER, "runs examples found in docstrings and files; debug_script execs a script", "PFA"),
    *_e("unittest", RUNNER, "loads tests by dotted name and runs them; mock.patch imports and sets attributes", "F"),
    *_e("test", RUNNER, "CPython's test package: helpers spawn interpreters and run scripts", "PF"),
    *_e("idlelib", RUNNER, "IDLE: shells, debuggers and runners that exec code (pyshell, run, debugger)", "PFA"),
    *_e("builtins.breakpoint", RUNNER, "starts the debugger through sys.breakpointhook", "PMFA"),
    *_g(RUNNER, "runs pytest on an installed package", "F",
        "numpy.test pandas.test scipy.test"),
    *_g(RUNNER, "runs pytest on an installed package", "T",
        "numpy._pytesttester pandas.util._tester scipy._lib._testutils.PytestTester"),
    *_g(RUNNER, "runs a documentation test file", "T",
        "numpy.testing.rundocs"),
    *_g(RUNNER, "runs a documentation test file", "P",
        "numpy.testing._private.utils.rundocs"),
    *_e("torch.utils.bottleneck", RUNNER, "runs a script under cProfile and the autograd profiler", "P"),
    *_e("torch.utils.benchmark", RUNNER, "compiles and times statement strings; runs valgrind", "T"),
    *_e("torch.testing._internal", RUNNER, "torch's test harness: spawns interpreters and runs scripts", "T"),
    *_e("fastcore.xtras.trace", RUNNER, "wraps a function so that calling it starts the debugger", "F"),
    *_e("fastcore.script", RUNNER, "command-line runners: call_parse parses sys.argv and calls the function", "T"),

    # --- interpreter & native code ------------------------------------------------------------------
    *_e("sys", NATIVE, "interpreter state: modules, path, audit/trace/profile hooks, exit, standard streams", "PMFA"),
    *_g(NATIVE, "calls native code: loads shared libraries, casts pointers, reads and writes raw memory", "PFA",
        "ctypes"),
    *_g(NATIVE, "calls native code: loads shared libraries, casts pointers, reads and writes raw memory", "FA",
        "_ctypes"),
    *_g(NATIVE, "calls native code: loads shared libraries, casts pointers, reads and writes raw memory", "T",
        "cffi numpy.ctypeslib"),
    *_e("mmap", NATIVE, "maps files and shared memory", "FA"),
    *_g(NATIVE, "installs signal handlers or sends signals", "FA",
        "signal.signal signal.alarm signal.setitimer signal.pthread_kill signal.raise_signal signal.set_wakeup_fd "
        "signal.siginterrupt signal.pthread_sigmask _signal.signal _signal.alarm _signal.setitimer "
        "_signal.pthread_kill _signal.raise_signal _signal.set_wakeup_fd _signal.siginterrupt _signal.pthread_sigmask"),
    *_e("atexit", NATIVE, "registers callables to run at exit", "F"),
    *_g(NATIVE, "installs a trace, profile or exception hook run by every thread", "FA",
        "threading.settrace threading.setprofile threading.settrace_all_threads threading.setprofile_all_threads "
        "threading.excepthook"),
    *_g(NATIVE, "reads standard input or exits the interpreter", "FA",
        "builtins.input builtins.raw_input builtins.exit builtins.quit"),
    *_g(NESTED, "torch's native loader of TorchScript, mobile or pickled modules", "T",
        "torch._C.import_ir_module torch._C.import_ir_module_from_buffer torch._C._import_ir_module_from_package "
        "torch._C._load_for_lite_interpreter torch._C._load_for_lite_interpreter_from_buffer "
        "torch._C._load_jit_module_from_bytes torch._C._load_jit_module_from_file "
        "torch._C._load_mobile_module_from_bytes torch._C._load_mobile_module_from_file torch._C._pickle_load_obj"),
    *_g(FILE, "torch's native archive reader or writer: opens, reads or writes files by path", "T",
        "torch._C.PyTorchFileReader torch._C.PyTorchFileWriter torch._C._get_model_extra_files "
        "torch._C._gds_load_storage torch._C._gds_save_storage torch._C._pickle_save torch._C._save_jit_module "
        "torch._C._save_mobile_module torch._C._save_parameters"),
    *_g(CODE, "compiles TorchScript source", "T",
        "torch._C._jit_script_compile torch._C._jit_script_class_compile torch._C._jit_script_compile_overload "
        "torch._C._jit_script_interface_compile"),
    *_e("torch._C._dynamo", CODE, "installs frame-evaluation callbacks that rewrite and run Python frames", "T"),
    *_e("torch._C._dispatch_library", NATIVE, "registers operator implementations in the dispatcher", "T"),
    *_g(NATIVE, "loads a shared library into the process", "T",
        "torch.ops.load_library torch._ops._Ops.load_library torch.classes.load_library "
        "torch._classes._Classes.load_library"),

    # --- process execution: ML libraries --------------------------------------------------------------
    *_e("torch.multiprocessing", PROCESS, "torch's multiprocessing: spawns processes", "F"),
    *_g(PROCESS, "launches and supervises worker processes", "F",
        "torch.distributed.elastic"),
    *_g(PROCESS, "launches and supervises worker processes", "T",
        "torch.distributed.run torch.distributed.launch"),
    *_e("torch.utils.collect_env", PROCESS, "runs commands to describe the environment (run, run_and_read_all)", "P"),
    *_e("torch.utils._get_clean_triton", PROCESS, "runs a script through subprocess", "T"),
    *_e("ray", PROCESS, "distributed execution: starts processes and runs tasks", "T"),
    *_g(PROCESS, "fastcore helper that runs a command", "T", "fastcore.xtras.run fastcore.xtras.shell"),
    *_e("fastcore.parallel", PROCESS, "runs callables on thread and process pools (parallel, startproc, run_procs)", "T"),
    *_e("sympy.printing.preview", PROCESS, "runs latex and viewer programs", "T"),
    *_e("sympy.preview", PROCESS, "runs latex and viewer programs", "T"),
    *_g(PROCESS, "runs callables in worker processes", "T", "sklearn.utils.parallel.Parallel"),

    # --- package installation -----------------------------------------------------------------------
    *_e("pip", INSTALL, "installs packages: pip.main and pip._internal run arbitrary setup code", "PFA"),
    *_e("ensurepip", INSTALL, "bootstraps pip by running it (_run_pip)", "PFA"),
    *_e("venv", INSTALL, "creates environments and runs pip in them", "PFA"),
    *_e("setuptools", INSTALL, "build and install machinery: runs setup commands and compilers", "T"),
    *_e("numpy.distutils", INSTALL, "numpy's build machinery: exec_command runs commands", "F"),
)

# Exact names inside a dangerous prefix that are plain values: constructing them touches nothing.
# (Only the exact name is exempt: ``os.stat_result.__new__`` or ``zipfile.ZipInfo.from_file`` are not.)
ALLOWED_INSIDE: dict[str, str] = {
    "os.stat_result": "structseq value (file metadata as numbers); constructing it reads nothing",
    "os.terminal_size": "structseq value (columns, lines)",
    "os.times_result": "structseq value (process times)",
    "os.uname_result": "structseq value (system names)",
    "posix.stat_result": "structseq value (file metadata as numbers); constructing it reads nothing",
    "posix.terminal_size": "structseq value (columns, lines)",
    "subprocess.CompletedProcess": "record of a finished process (args, returncode, output); runs nothing",
    "subprocess.CalledProcessError": "exception value; runs nothing",
    "subprocess.TimeoutExpired": "exception value; runs nothing",
    "socket.gaierror": "exception value; opens nothing",
    "socket.herror": "exception value; opens nothing",
    "_socket.gaierror": "exception value; opens nothing",
    "_socket.herror": "exception value; opens nothing",
    "_pickle.PickleError": "exception value",
    "_pickle.PicklingError": "exception value",
    "_pickle.UnpicklingError": "exception value",
    "zipfile.ZipInfo": "archive member metadata value; reads nothing",
    "tarfile.TarInfo": "archive member metadata value; reads nothing",
    "asyncio.exceptions.CancelledError": "exception value",
    "asyncio.exceptions.TimeoutError": "exception value",
    "asyncio.exceptions.InvalidStateError": "exception value",
    "torch.serialization._get_layout": "maps a layout name to a torch.layout; one of torch's weights-only defaults",
}

# Names the allowlists serve through a narrow shim (``allowlist.SHIMS``) although the real object is a
# primitive: the policy answers for shims before it asks this catalogue, and the real object never reaches
# the unpickler.  Anywhere else (a plain pickle, strict mode) the name stays dangerous.
SHIMMED: dict[str, str] = {
    "builtins.getattr": "served as getattr restricted to allowlist.GETATTR_PAIRS in fastai internals",
}

# Names other scanners flag that are deliberately not listed here (and why).
NOT_LISTED: dict[str, str] = {
    "functools.partial": "calls only the callable it wraps, itself a global judged on its own; strict mode serves "
                         "a narrow shim for it (allowlist.STRICT_SHIMS)",
    "torch.storage._load_from_bytes": "how torch pickles every storage under plain pickle (genuine NeuralNetTorch "
                                      "models); strict mode serves a weights-only shim; the payload is a nested "
                                      "torch file a scanner should read rather than flag by name",
    "builtins.type": "genuine pickles spell NoneType as type(None); a class it creates only combines callables the "
                     "pickle already holds, each judged on its own",
    "builtins.print": "writes to stdout only (file= is keyword-only); the fastai learner's logger (allowlisted)",
    "builtins.memoryview": "a view over a bytes-like value the pickle already holds; no raw pointer access",
    "builtins.property": "descriptor wrapping a callable the pickle already holds",
    "builtins.staticmethod": "descriptor wrapping a callable the pickle already holds",
    "builtins.classmethod": "descriptor wrapping a callable the pickle already holds",
    "builtins.aiter": "async iteration over a value; no I/O",
    "builtins.anext": "async iteration over a value; no I/O",
    "base64.b64decode": "pure bytes transform; a payload it decodes still needs a loader, which is listed",
    "base64.b64encode": "pure bytes transform",
    "base64.decode": "reads from and writes to file objects the pickle must already hold; no path opening",
    "codecs.decode": "pure text/bytes transform (codecs.open, which opens paths, is listed)",
    "codecs.encode": "pure text/bytes transform; _codecs.encode is how numpy and torch pickle raw bytes",
}

# Modules other scanners flag wholesale that are narrowed here to their dangerous members (and why).
NARROWED: dict[str, str] = {
    "builtins": "value types (int, dict, slice ...), pure functions (len, sorted ...) and exceptions are harmless; "
                "the primitives are listed one by one",
    "__builtin__": "Python 2 spelling of builtins (pickle maps it), narrowed the same way",
    "collections": "containers; never a primitive",
    "functools": "reduce, update_wrapper and wraps are listed; partial, lru_cache, cmp_to_key ... are not primitives",
    "operator": "the getter, setter and call trampolines are listed; arithmetic and comparison functions are pure",
    "_operator": "as operator",
    "types": "code, function, cell, method and module constructors are listed; SimpleNamespace, MappingProxyType "
             "and the other types are values",
    "inspect": "frame, member, closure and source readers are listed; Signature, Parameter and _empty are values "
               "fastai pickles (allowlisted)",
    "logging": "file and network handlers and logging.config are listed; loggers pickle as logging.getLogger(name)",
    "threading": "Thread, Timer and the global hooks are listed; locks, events and local are values",
    "_thread": "start_new_thread and interrupt_main are listed",
    "signal": "handler installation and signal sending are listed; Signals, Handlers and Sigmasks are enums",
    "_signal": "as signal",
    "gc": "the object-graph readers are listed; collect, enable and disable are not primitives",
    "platform": "the functions that run helper commands are listed; python_version and friends parse strings",
    "uuid": "the functions that run commands are listed; uuid.UUID is a value genuine pickles contain",
    "difflib": "pure text comparison: nothing in it reads files, runs code or opens sockets",
    "http": "http.client, http.server and the file cookie jars are listed; HTTPStatus and http.cookies are values",
    "urllib": "urllib.request and robotparser are listed; urllib.parse results are values genuine pickles contain",
    "requests": "the request functions, sessions and adapters are listed; Response, structures and exceptions are values",
    "posixpath": "the file-system probes are listed; join, split, basename, normpath ... are pure string functions",
    "ntpath": "as posixpath",
    "numpy.testing._private.utils": "runstring and rundocs are listed; the assert_* helpers are pure",
    "concurrent.futures": "the executors are listed; Future and wait are not primitives",
    "codecs": "codecs.open is listed; encode/decode are pure transforms",
    "base64": "pure transforms",
    "torch.distributed": "rpc, elastic, run/launch, checkpoint and the process-group openers are listed; DTensor "
                         "placements and the like are values checkpoints contain",
}

# Module names that, reached as an attribute of another module, are judged from there on (name as the
# attribute -> the module it conventionally aliases): ``torch.os.system`` is os.system and
# ``collections._sys.modules`` is sys.modules.  Names of real submodules that collide with a listed
# stdlib module (numpy.random._pickle, torch.signal, torch.profiler.profile, torch.select, torch.types ...)
# are deliberately absent.
MODULE_ALIASES: dict[str, str] = {
    **{m: m for m in (
        "os posix nt sys subprocess _posixsubprocess shutil socket _socket pickle builtins importlib _imp runpy "
        "marshal ctypes _ctypes pty tempfile webbrowser multiprocessing asyncio io _io operator _operator functools "
        "pdb bdb pydoc urllib http requests").split()},
    "_os": "os", "_sys": "sys", "_subprocess": "subprocess", "_shutil": "shutil", "_importlib": "importlib",
    "__builtin__": "builtins",
}

# Attributes that turn any object into a way to reach namespaces, classes or code.
REFLECTIVE_ATTRIBUTES: dict[str, str] = {
    "__globals__": "a function's module namespace",
    "__builtins__": "a module's builtins (eval, exec, __import__ ...)",
    "__subclasses__": "every subclass of a class, including os._wrap_close and friends",
    "__code__": "a function's code object",
    "__closure__": "a function's closure cells",
    "__dict__": "an object's or class's namespace",
    "__class__": "an object's class",
    "__base__": "a class's base class",
    "__bases__": "a class's base classes",
    "__mro__": "a class's method resolution order",
    "__getattribute__": "generic attribute access",
    "__getattr__": "attribute access fallback",
    "__setattr__": "generic attribute assignment",
    "__delattr__": "generic attribute deletion",
    "__getitem__": "item access on namespaces and mappings",
    "__setitem__": "item assignment on namespaces and mappings",
    "__delitem__": "item deletion on namespaces and mappings",
    "__reduce__": "an object's reconstruction recipe",
    "__reduce_ex__": "an object's reconstruction recipe",
    "__import__": "the import function",
    "__loader__": "a module's loader (load_module, exec_module, get_data)",
    "__spec__": "a module's spec and loader",
    "__self__": "the object or module a builtin method is bound to",
    "__func__": "the function under a method",
    "__wrapped__": "the function under a decorator",
    "__init_subclass__": "the hook run on class creation",
    "f_globals": "a frame's module namespace",
    "f_locals": "a frame's local namespace",
    "f_builtins": "a frame's builtins",
    "f_back": "the calling frame",
    "gi_frame": "a generator's frame",
    "cr_frame": "a coroutine's frame",
    "ag_frame": "an async generator's frame",
    "tb_frame": "a traceback's frame",
    "func_globals": "Python 2 spelling of __globals__",
}


# --- lookup -----------------------------------------------------------------------------------------

def _index() -> dict[str, Danger]:
    index: dict[str, Danger] = {}
    for entry in ENTRIES:
        if entry.name in index:
            raise ValueError(f"duplicate catalogue entry: {entry.name}")
        index[entry.name] = entry
    return index


_INDEX = _index()
_REFLECTIVE = {attr: Danger(attr, IMPORT, f"reaches {what} through a dotted name", ("ag_torchfix",))
               for attr, what in REFLECTIVE_ATTRIBUTES.items()}
_CACHE: dict[str, Danger | None] = {}
_CACHE_MAX = 1 << 16


def _prefix_match(name: str) -> Danger | None:
    hit = _INDEX.get(name)
    if hit is not None:
        return hit
    end = len(name)
    while True:
        end = name.rfind(".", 0, end)
        if end <= 0:
            return None
        hit = _INDEX.get(name[:end])
        if hit is not None:
            return hit


def _python2(name: str) -> str:
    """``name`` as pickle maps Python-2 spellings (``__builtin__.reduce`` is functools.reduce)."""
    import _compat_pickle  # stdlib data, loaded by pickle anyway; only needed for unmapped names

    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        return ".".join(_compat_pickle.NAME_MAPPING[(module, attr)])
    head, dot, tail = name.partition(".")
    if head in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[head] + dot + tail
    return name


def _lookup(name: str, python2: bool = True) -> Danger | None:
    if name in ALLOWED_INSIDE:
        return None
    hit = _prefix_match(name)
    if hit is not None:
        return hit
    if python2:
        mapped = _python2(name)
        if mapped != name:
            return _lookup(mapped, python2=False)
    parts = name.split(".")
    for i in range(1, len(parts)):
        part = parts[i]
        if part in _REFLECTIVE:
            return _REFLECTIVE[part]
        if part in MODULE_ALIASES:
            rest = ".".join([MODULE_ALIASES[part], *parts[i + 1:]])
            if rest not in ALLOWED_INSIDE:
                hit = _prefix_match(rest)
                if hit is not None:
                    return hit
    return None


def lookup(name: str) -> Danger | None:
    """The catalogue entry that makes ``name`` (a normalised dotted global) dangerous, or None."""
    try:
        return _CACHE[name]
    except KeyError:
        pass
    hit = _lookup(name)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[name] = hit
    return hit


def danger(name: str) -> str | None:
    """Why ``name`` is a known-dangerous global ("<category>: <reason>"), or None if it is not."""
    hit = lookup(name)
    if hit is None:
        return None
    return f"{CATEGORIES[hit.category].split(':', 1)[0]}: {hit.reason}"


def summary() -> dict:
    """Counts by category and by source (each entry counts once per source that flags it)."""
    by_category = {c: 0 for c in CATEGORIES}
    by_source = {s: 0 for s in SOURCES}
    for entry in ENTRIES:
        by_category[entry.category] += 1
        for source in entry.sources:
            by_source[source] += 1
    return {"entries": len(ENTRIES), "by_category": by_category, "by_source": by_source,
            "allowed_inside": len(ALLOWED_INSIDE), "shimmed": len(SHIMMED), "not_listed": len(NOT_LISTED),
            "narrowed": len(NARROWED),
            "module_aliases": len(MODULE_ALIASES), "reflective_attributes": len(REFLECTIVE_ATTRIBUTES)}

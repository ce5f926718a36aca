"""Strict mode checks values, not only classes (issue 18): each payload below is built from real pandas, numpy,
torch and sklearn objects, shown to crash, allocate, hang or plant attributes when plain pickle loads it (in a
subprocess, bounded), and refused by strict mode with a typed error before the library sees the value.  The same
files are refused by ``ag-torchfix scan --strict``.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from helpers import TEXT_FRAME, fitted_generator

import ag_torchfix
from ag_torchfix.policy import allowlist, value_invariants
from ag_torchfix.load import strict_mode

LIVE = """
import pickle, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
obj = pickle.loads(sys.stdin.buffer.read())
{use}
"""


def live(data: bytes, use: str = "pass", timeout: float = 60) -> subprocess.CompletedProcess:
    """Plain pickle (what AutoGluon does without strict mode) in a subprocess limited to 3 GiB, then ``use``."""
    return subprocess.run([sys.executable, "-c", LIVE.format(use=use)], input=data, capture_output=True,
                          timeout=timeout)


def refused(data: bytes, match: str, path: str = "/nonexistent/predictor/models/M/model.pkl"):
    with pytest.raises(ag_torchfix.DisallowedGlobalsError, match=match):
        strict_mode.load_pickle(data, path=path)


def scan_strict(tmp_path, data: bytes) -> int:
    (tmp_path / "payload.pkl").write_bytes(data)
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", "--json",
                          str(tmp_path / "payload.pkl")], capture_output=True, text=True, timeout=300)
    assert json.loads(out.stdout), out.stderr
    return out.returncode


# --- pandas ------------------------------------------------------------------------------------------------

def categorical_out_of_range() -> bytes:
    cat = pd.Categorical([f"c{i}" for i in range(300)] * 10)  # int16 codes
    cat._ndarray[:] = np.arange(3000, dtype=np.int16) * 10 + 300  # 300 categories, codes 300..30290
    return pickle.dumps(pd.Series(cat))


def test_categorical_codes_outside_their_categories_crash_pandas_and_are_refused(tmp_path):
    data = categorical_out_of_range()
    crashed = live(data, "print([str(v) for v in obj.astype(object)])")  # pandas takes categories[code] unchecked
    assert crashed.returncode < 0, crashed  # SIGSEGV (reading pointers past the categories)
    refused(data, "codes 300..30290 for 300 categories")
    assert scan_strict(tmp_path, data) != 0


def test_a_series_longer_than_its_values_is_refused():
    """The legacy SingleBlockManager state sets axes and blocks with no check: 10**8 positions over one value."""
    series = pd.Series([1.0])
    series._mgr.axes[0] = pd.RangeIndex(10**8 - 1)
    data = pickle.dumps(series)
    result = live(data, "print(len(obj)); obj.to_numpy().sum()")
    assert result.stdout.split()[0] == b"99999999"  # pandas believes it
    refused(data, "positions over 1 values")


def test_a_dataframe_state_cannot_plant_attributes():
    """NDFrame.__setstate__ sets every unknown state key as an attribute: here one that shadows a method."""
    frame = pd.DataFrame({"a": [1, 2]})
    state = frame.__getstate__()
    state["to_numpy"] = "planted"
    frame.__getstate__ = lambda: state
    data = pickle.dumps(frame)
    assert live(data, "assert obj.to_numpy == 'planted'").returncode == 0
    refused(data, r"state sets \['to_numpy'\]")


def test_a_range_index_of_a_trillion_positions_is_refused():
    data = pickle.dumps(pd.RangeIndex(10**12))  # _new_Index(RangeIndex, {start, stop, step, name}): 90 bytes
    assert live(data, "obj.to_numpy()").returncode != 0  # MemoryError: 8 TB
    refused(data, "RangeIndex of 1000000000000 positions")


def test_an_index_takes_only_the_arguments_pandas_writes():
    """Index(**d) passes whatever the file names to pandas' constructor (tupleize_cols, copy, ...)."""
    from pandas.core.indexes.base import _new_Index

    class Forged:
        def __reduce__(self):
            return _new_Index, (pd.Index, {"data": np.array(["a"], dtype=object), "name": None, "copy": True})

    data = pickle.dumps(Forged())
    assert list(live(data, "print(list(obj))").stdout.split()) == [b"['a']"]  # pandas takes it
    refused(data, r"built with \['copy'\]")
    assert strict_mode.load_pickle(pickle.dumps(pd.Index(["a"])), path="/nonexistent/x.pkl").tolist() == ["a"]


# --- numpy and the call arguments --------------------------------------------------------------------------

def test_an_object_array_constructed_with_a_billion_slots_is_refused():
    import struct

    # NEWOBJ(numpy.ndarray, ((10**9,), "O")): what a file may write for a class it may construct
    data = (b"\x80\x04cnumpy\nndarray\nJ" + struct.pack("<i", 10**9) + b"\x85X\x01\x00\x00\x00O\x86\x81.")
    assert live(data).returncode != 0  # MemoryError: 8 GB of None pointers from 60 bytes
    refused(data, "NEWOBJ of numpy.ndarray with arguments")


def test_sklearn_tree_shapes_are_bounded_before_it_allocates():
    from sklearn.tree._tree import Tree

    class Forged:
        def __reduce__(self):
            return Tree, (4, np.array([10**6] * 4000, dtype=np.intp), 4000)

    data = pickle.dumps(Forged())
    assert live(data, "print(obj.n_outputs)").stdout.split() == [b"4000"]  # sklearn takes it
    refused(data, "outputs of up to 1000000 classes")


def test_dict_keys_that_hash_alike_are_refused_quickly():
    modulus = (1 << 61) - 1
    data = pickle.dumps({k * modulus: 0 for k in range(1, 6000)})  # every key hashes to 0
    start = time.perf_counter()
    assert live(data).returncode == 0
    plain = time.perf_counter() - start
    start = time.perf_counter()
    refused(data, "share a hash")
    assert time.perf_counter() - start < plain  # refused after 17 keys, not after 6000**2/2 comparisons
    genuine = pickle.dumps({k: 0 for k in range(-50_000, 50_000)})
    assert len(strict_mode.load_pickle(genuine, path="/nonexistent/x.pkl")) == 100_000


# --- torch ---------------------------------------------------------------------------------------------------

def test_a_zero_stride_tensor_in_a_plain_pickle_is_refused(tmp_path):
    import torch

    tensor = torch.zeros(1).as_strided((1 << 30,), (0,))  # one float seen as 4 GiB
    data = pickle.dumps(tensor)
    assert live(data, "obj.contiguous()").returncode != 0
    refused(data, "not the contiguous stride")
    assert scan_strict(tmp_path, data) != 0


def test_the_tables_cover_every_call_strict_mode_admits():
    """Every CALL entry and shim has its argument tuples; every invariant implemented is described."""
    calls = {e.name for e in allowlist.STRICT if e.use == allowlist.CALL} | allowlist.STRICT_SHIMS.keys()
    assert calls <= allowlist.STRICT_CALLS.keys(), calls - allowlist.STRICT_CALLS.keys()
    implemented = {name for name, _ in value_invariants._MADE_CHECKS}
    assert implemented <= allowlist.STRICT_INVARIANTS.keys()


# --- AutoGluon objects: strings it compiles, graphs it walks, attributes it reads ------------------------------

@pytest.fixture(scope="module")
def text_frame():
    return pd.DataFrame(TEXT_FRAME)


_generator = fitted_generator


TRANSFORM = ("import pandas as pd; obj.transform(pd.DataFrame({'text': ['a' * 40 + '!']}))")


def test_a_text_symbol_is_one_character(text_frame):
    """TextSpecialFeatureGenerator counts each symbol with X.str.count('\\\\' + symbol): a regular expression."""
    from autogluon.features.generators import TextSpecialFeatureGenerator

    generator = _generator(TextSpecialFeatureGenerator, text_frame)
    genuine = pickle.dumps(generator)
    assert strict_mode.load_pickle(genuine, path="/nonexistent/x.pkl")._symbols_per_feature
    evil = "d*(a+)+$"
    generator._symbols_per_feature["text"] = np.array(["!", evil])  # what AutoGluon keeps: a str array
    generator._feature_names_dict["text"][evil] = {"count": "text.evil.count", "ratio": "text.evil.ratio"}
    data = pickle.dumps(generator)
    with pytest.raises(subprocess.TimeoutExpired):  # catastrophic backtracking on 41 characters
        live(data, TRANSFORM, timeout=10)
    refused(data, "one character")


def test_a_token_pattern_is_the_one_sklearn_writes(text_frame):
    from autogluon.features.generators import TextNgramFeatureGenerator

    generator = _generator(TextNgramFeatureGenerator, text_frame,
                           vectorizer=__import__("sklearn.feature_extraction.text", fromlist=["x"]).CountVectorizer(
                               min_df=1, ngram_range=(1, 1), max_features=20, dtype=np.uint8))
    vectorizers = generator.vectorizers
    assert strict_mode.load_pickle(pickle.dumps(generator), path="/nonexistent/x.pkl").vectorizers
    vectorizers[0].token_pattern = r"(a|aa)+!?x"
    data = pickle.dumps(generator)
    with pytest.raises(subprocess.TimeoutExpired):
        live(data, TRANSFORM, timeout=10)
    refused(data, "token_pattern")


def test_a_feature_generator_that_is_its_own_post_generator_is_refused(text_frame):
    from autogluon.features.generators import IdentityFeatureGenerator

    generator = _generator(IdentityFeatureGenerator, text_frame)
    generator._post_generators = [generator]
    data = pickle.dumps(generator)
    result = live(data, "import pandas as pd; obj.transform(pd.DataFrame({'text': ['a']}))")
    assert b"RecursionError" in result.stderr  # untyped, from AutoGluon's own recursion
    refused(data, "contains itself")


def test_a_feature_generator_without_the_attributes_autogluon_reads_is_refused(text_frame):
    from autogluon.features.generators import IdentityFeatureGenerator

    generator = _generator(IdentityFeatureGenerator, text_frame)
    del generator.__dict__["features_in"]
    data = pickle.dumps(generator)
    result = live(data, "import pandas as pd; obj.transform(pd.DataFrame({'text': ['a']}))")
    assert b"AttributeError" in result.stderr
    refused(data, "lacks features_in")


def test_torch_modules_shared_along_a_chain_are_refused():
    """Each level holds the next one twice: torch's eval() walks 2**depth paths (it keeps no memo)."""
    import torch

    module = torch.nn.ReLU()
    for _ in range(40):
        parent = torch.nn.Sequential()
        parent.add_module("a", module)
        parent.add_module("b", torch.nn.Sequential(module))
        module = parent
    data = pickle.dumps(module)
    with pytest.raises(subprocess.TimeoutExpired):
        live(data, "obj.eval()", timeout=10)
    refused(data, "visits more than")
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    net.add_module("again", net[1])  # genuine networks share an activation module
    assert strict_mode.load_pickle(pickle.dumps(net), path="/nonexistent/x.pkl")


def test_a_class_inside_categorical_values_is_seen():
    """The walk looks into every pandas container: here a class among a categorical's categories."""
    from autogluon.tabular.models.rf.compilers.native import AbstractNativeCompiler

    series = pd.Series(pd.Categorical([False, AbstractNativeCompiler]), index=["save_in_pkl", "load"])
    assert series.load is AbstractNativeCompiler  # a Series answers attribute reads by label
    refused(pickle.dumps({"compiler": series}), "the class autogluon.tabular.models.rf.compilers.native")


def test_a_datetime_feature_is_a_numeric_field_of_series_dt():
    """DatetimeFeatureGenerator reads getattr(X[col].dt, feature).astype(np.int64) for each name the file lists."""
    from autogluon.features.generators import DatetimeFeatureGenerator

    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-02", "2025-03-04"] * 10)})
    generator = _generator(DatetimeFeatureGenerator, frame)
    assert strict_mode.load_pickle(pickle.dumps(generator), path="/nonexistent/x.pkl").features
    generator.features = ["year", "tz_localize"]
    data = pickle.dumps(generator)
    result = live(data, "import pandas as pd; obj.transform(pd.DataFrame({'when': pd.to_datetime(['2024-01-02'])}))")
    assert b"AttributeError" in result.stderr  # a method has no astype: untyped, at predict
    refused(data, "datetime field")


def test_a_symlinked_model_directory_is_refused_like_scan_reports_it(zoo_predictors, tmp_path):
    """scan --strict does not follow a symlinked directory (unreadable, exit 3); the strict load refuses it too."""
    import shutil

    from autogluon.common.loaders import load_pkl

    source = zoo_predictors["zoo-multiclass"]
    predictor = tmp_path / "p"
    (predictor / "models").mkdir(parents=True)
    shutil.copy(source / "predictor.pkl", predictor / "predictor.pkl")
    shutil.copytree(source / "models" / "LightGBM", tmp_path / "elsewhere")
    (predictor / "models" / "LightGBM").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    out = subprocess.run([sys.executable, "-m", "ag_torchfix", "scan", "--strict", str(predictor)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 3, out.stdout
    with ag_torchfix.strict(), pytest.raises(ag_torchfix.UnreadableFileError, match="symlinked directory"):
        load_pkl.load(path=str(predictor / "models" / "LightGBM" / "model.pkl"))
    with ag_torchfix.strict():  # the same file through a real directory loads
        assert load_pkl.load(path=str(source / "models" / "LightGBM" / "model.pkl")).name == "LightGBM"


def test_a_value_cannot_be_rebuilt_after_it_was_checked():
    """A second BUILD of the codes array behind a checked Categorical would make its codes point past the
    categories after the check: every object is built once, before it is used."""
    codes = np.array([0, 1], dtype=np.int8)
    first = pickle.dumps(codes, protocol=3)  # no frames: bytes can be appended
    again = pickle.dumps(np.array([0, 120], dtype=np.int8).__reduce__()[2], protocol=3)[2:-1]  # its state only
    data = first[:-1] + b"2" + again + b"b0."  # DUP, state, BUILD, POP
    assert list(pickle.loads(data)) == [0, 120]  # plain pickle rebuilds it
    refused(data, "after it was built or passed to a call")


def test_a_vectorizer_reads_its_text_as_content_not_as_file_names(text_frame, tmp_path):
    """CountVectorizer(input='filename') opens each text value as a path at predict (a file read of the file's
    choosing); AutoGluon writes input='content'."""
    from autogluon.features.generators import TextNgramFeatureGenerator
    from sklearn.feature_extraction.text import CountVectorizer

    generator = _generator(TextNgramFeatureGenerator, text_frame,
                           vectorizer=CountVectorizer(min_df=1, ngram_range=(1, 1), max_features=20, dtype=np.uint8))
    generator.vectorizers[0].input = "filename"
    data = pickle.dumps(generator)
    secret = tmp_path / "secret.txt"
    secret.write_text("hello hello")
    result = live(data, f"import pandas as pd; print(obj.transform(pd.DataFrame({{'text': [{str(secret)!r}]}})).sum().sum())")
    assert result.returncode == 0 and int(result.stdout.split()[-1]) > 0, result  # it read the file
    refused(data, "input")

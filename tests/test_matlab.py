"""The .mat loader: v5 and v7.3 round trips, MATLAB shapes, and every kind of bad input."""

import subprocess

from conftest import NEUROTRAIN

import h5py
import numpy as np
import pytest
import scipy.io

from neurotrain.systems.ei_rnn.data import load_mat_dataset, preprocess
from neurotrain.matlab import mat_version, read_mat, write_mat
from neurotrain.errors import NeurotrainError


def _vars(n_trials=6, n_time=5, n_neurons=4, n_inputs=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"spikes": rng.poisson(2.0, size=(n_trials, n_time, n_neurons)).astype(float),
            "inputs": rng.normal(size=(n_trials, n_time, n_inputs)),
            "conditions": np.array([[1], [2], [1], [2], [1], [2]], float)[:n_trials],
            "ei_labels": np.array([[0], [0], [0], [1]], float)[:n_neurons],
            "dt": np.array([[0.025]])}


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_round_trip_keeps_matlab_shapes(tmp_path, version):
    v = _vars()
    path = tmp_path / f"x_{version}.mat"
    write_mat(path, v, version)
    assert mat_version(path) == version
    back = read_mat(path)
    for k in v:
        assert back[k].shape == v[k].shape, k
        assert np.allclose(back[k], v[k])
    if version == "v7.3":  # stored column-major, like MATLAB: HDF5 holds the reversed shape
        with h5py.File(path, "r") as fh:
            assert fh["spikes"].shape == (4, 5, 6)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_load_dataset(tmp_path, cfg, version):
    path = tmp_path / "d.mat"
    write_mat(path, _vars(), version)
    d = load_mat_dataset(path, cfg["data"])
    assert d["spikes"].shape == (6, 5, 4) and d["inputs"].shape == (6, 5, 2)
    assert list(d["conditions"]) == [0, 1, 0, 1, 0, 1] and list(d["condition_values"]) == [1, 2]
    assert d["outputs"].shape == (6, 5, 0) and d["dt"] == 0.025


def _bad(tmp_path, cfg, mutate, match, version="v5"):
    v = _vars()
    mutate(v)
    path = tmp_path / "bad.mat"
    write_mat(path, v, version)
    with pytest.raises(NeurotrainError, match=match) as exc:
        load_mat_dataset(path, cfg["data"])
    assert str(path) in str(exc.value)


def test_missing_variable(tmp_path, cfg):
    _bad(tmp_path, cfg, lambda v: v.pop("inputs"), r"missing variable 'inputs'.*ei_rnn.data.variables.inputs")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_nan_and_inf(tmp_path, cfg, version):
    _bad(tmp_path, cfg, lambda v: v["spikes"].__setitem__((0, 0, 0), np.nan), "'spikes' has 1 NaN/Inf", version)
    _bad(tmp_path, cfg, lambda v: v["inputs"].__setitem__((1, 1, 1), np.inf), "'inputs' has 1 NaN/Inf", version)


def test_shape_mismatches(tmp_path, cfg):
    _bad(tmp_path, cfg, lambda v: v.__setitem__("inputs", v["inputs"][:, :4]), "'inputs' has shape")
    _bad(tmp_path, cfg, lambda v: v.__setitem__("conditions", v["conditions"][:5]), "'conditions' has 5 entries, expected 6")
    _bad(tmp_path, cfg, lambda v: v.__setitem__("ei_labels", v["ei_labels"][:3]), "'ei_labels' has 3 entries, expected 4")
    _bad(tmp_path, cfg, lambda v: v.__setitem__("spikes", v["spikes"][0]), r"must be \[n_trials, n_time, n_neurons\]")
    _bad(tmp_path, cfg, lambda v: v.__setitem__("ei_labels", np.zeros((4, 1))), "at least one E and one I")


def test_missing_empty_text_and_truncated_files(tmp_path, cfg):
    with pytest.raises(NeurotrainError, match="file not found"):
        load_mat_dataset(tmp_path / "nope.mat", cfg["data"])
    empty = tmp_path / "empty.mat"
    empty.write_bytes(b"")
    with pytest.raises(NeurotrainError, match="empty"):
        load_mat_dataset(empty, cfg["data"])
    text = tmp_path / "notes.mat"
    text.write_text("trial,neuron,count\n1,1,3\n")
    with pytest.raises(NeurotrainError, match="not a MATLAB .mat file"):
        load_mat_dataset(text, cfg["data"])
    for version in ("v5", "v7.3"):
        good = tmp_path / f"good_{version}.mat"
        write_mat(good, _vars(n_trials=6, n_time=50, n_neurons=4), version)
        cut = tmp_path / f"cut_{version}.mat"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        with pytest.raises(NeurotrainError, match="truncated or corrupt") as exc:
            load_mat_dataset(cut, cfg["data"])
        assert str(cut) in str(exc.value)


def test_preprocess_layout(tmp_path, cfg):
    path = tmp_path / "d.mat"
    write_mat(path, _vars(), "v7.3")
    out = tmp_path / "p.h5"
    preprocess(path, cfg["data"], out)
    with h5py.File(out, "r") as fh:
        assert fh["spikes"].shape == (6, 5, 4) and fh["spikes"].dtype == np.float32
        assert fh["ei_labels"][()].tolist() == [0, 0, 0, 1]
        tr, va, te = set(fh["train_idx"][()]), set(fh["val_idx"][()]), set(fh["test_idx"][()])
        assert tr.isdisjoint(va) and te.isdisjoint(tr | va) and tr | va | te == set(range(6))
        assert fh.attrs["dt"] == 0.025


def test_cli_bad_file_exits_nonzero_without_output(tmp_path):
    text = tmp_path / "export.mat"
    text.write_text("not matlab")
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--raw", "export.mat", "--out", "processed.h5"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: export.mat") and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [text]


def _write_bad(tmp_path, kind):
    path = tmp_path / "export.mat"
    v = _vars()
    if kind == "missing":
        return path
    if kind == "nan":
        v["spikes"][2, 1, 0] = np.nan
    elif kind == "missing_variable":
        v.pop("ei_labels")
    elif kind == "shapes":
        v["conditions"] = v["conditions"][:4]
    elif kind == "no_time_bins":
        v["spikes"], v["inputs"] = v["spikes"][:, :0], v["inputs"][:, :0]
        v.pop("outputs", None)
    elif kind == "overflow":
        v["spikes"][0, 0, 0] = 1e39  # a float64 count that float32 cannot hold
    write_mat(path, v, "v7.3" if kind == "truncated" else "v5")
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    return path


@pytest.mark.parametrize("kind,needle", [
    ("missing", "file not found"), ("truncated", "truncated or corrupt"), ("nan", "NaN/Inf"),
    ("missing_variable", "missing variable 'ei_labels'"), ("shapes", "expected 6 (one per trial)"),
])
def test_cli_bad_inputs(tmp_path, kind, needle):
    _write_bad(tmp_path, kind)
    out = tmp_path / "out" / "processed.h5"
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--raw", "export.mat", "--out", "out/processed.h5"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "export.mat" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_v73_empty_outputs_mean_no_outputs(tmp_path, cfg):
    path = tmp_path / "d.mat"
    write_mat(path, _vars(), "v7.3")
    with h5py.File(path, "a") as fh:  # MATLAB writes `outputs = []` as its dimensions, flagged empty
        ds = fh.create_dataset("outputs", data=np.array([0, 0], dtype=np.uint64))
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        ds.attrs["MATLAB_empty"] = np.uint8(1)
    assert load_mat_dataset(path, cfg["data"])["outputs"].shape == (6, 5, 0)


# ----------------------------------------------------------------------------- one reader, v5 and v7.3
# Each MATLAB value is written twice: as v5 by scipy.io.savemat, and as v7.3 in the layout
# MATLAB writes (HDF5 with the 512-byte header from write_mat, column-major datasets with
# MATLAB_class attributes, cell elements as object references into `#refs#`, a struct as a
# group), independently of the reader under test.
class Char:
    """A MATLAB char matrix: one row per string (all of one length, as MATLAB pads them)."""

    def __init__(self, rows):
        assert len({len(r) for r in rows}) == 1
        self.rows = list(rows)


class Cell:
    """A MATLAB cell of ``shape`` whose ``items`` are in MATLAB's (column-major) order."""

    def __init__(self, items, shape):
        assert len(items) == np.prod(shape)
        self.items, self.shape = list(items), tuple(shape)


class String:
    """A MATLAB string array (v7.3 only: an object of the file's subsystem, as MATLAB stores it)."""


_CLASS = {np.dtype(np.float64): "double", np.dtype(np.float32): "single", np.dtype(np.int8): "int8",
          np.dtype(np.uint8): "uint8", np.dtype(np.int32): "int32", np.dtype(np.bool_): "logical"}


def _v5_value(value):
    if isinstance(value, Char):
        return np.array(value.rows)
    if isinstance(value, Cell):
        arr = np.empty(len(value.items), dtype=object)
        for i, item in enumerate(value.items):
            arr[i] = _v5_value(item)
        return arr.reshape(value.shape, order="F")
    if isinstance(value, dict):
        return {k: _v5_value(v) for k, v in value.items()}
    return value


def write_v5(path, variables):
    scipy.io.savemat(str(path), {k: _v5_value(v) for k, v in variables.items()})


def _h5_attrs(obj, cls, **extra):
    obj.attrs["MATLAB_class"] = np.bytes_(cls)
    for k, v in extra.items():
        obj.attrs[k] = v


def _h5_value(fh, parent, name, value):
    """Write ``value`` as MATLAB does in a v7.3 file; returns the dataset or group."""
    if isinstance(value, String):
        ds = parent.create_dataset(name, data=np.array([[3707764736], [2], [1], [1], [1], [1]], np.uint32))
        _h5_attrs(ds, "string", MATLAB_object_decode=np.int32(3))
        return ds
    if isinstance(value, (str, Char)):
        rows = [value] if isinstance(value, str) else value.rows
        if not rows[0]:  # '' is stored as its dimensions, flagged empty
            ds = parent.create_dataset(name, data=np.array([0, 0], np.uint64))
            _h5_attrs(ds, "char", MATLAB_int_decode=np.int32(2), MATLAB_empty=np.uint8(1))
            return ds
        codes = np.array([[ord(c) for c in r] for r in rows], np.uint16)  # MATLAB [rows, columns]
        ds = parent.create_dataset(name, data=codes.T)
        _h5_attrs(ds, "char", MATLAB_int_decode=np.int32(2))
        return ds
    if isinstance(value, Cell):
        refs = fh.require_group("#refs#")
        if "a" not in refs:  # MATLAB's canonical empty
            _h5_attrs(refs.create_dataset("a", data=np.array([0, 0], np.uint64)), "canonical empty",
                      MATLAB_empty=np.uint8(1))
        table = np.empty(value.shape[::-1], dtype=h5py.ref_dtype)
        for k, item in enumerate(value.items):
            obj = _h5_value(fh, refs, f"{name}_{len(refs)}", item)
            table[np.unravel_index(k, value.shape, order="F")[::-1]] = obj.ref
        ds = parent.create_dataset(name, data=table)
        _h5_attrs(ds, "cell")
        return ds
    if isinstance(value, dict):
        g = parent.create_group(name)
        fields = np.empty(len(value), dtype=h5py.vlen_dtype(np.dtype("S1")))
        for i, k in enumerate(value):
            fields[i] = np.array([c.encode() for c in k], dtype="S1")
        _h5_attrs(g, "struct", MATLAB_fields=fields)
        for k, v in value.items():
            _h5_value(fh, g, k, v)
        return g
    arr = np.asarray(value)
    cls = _CLASS[arr.dtype]
    extra = {"MATLAB_int_decode": np.int32(1)} if cls == "logical" else {}
    if arr.size == 0:
        ds = parent.create_dataset(name, data=np.array(arr.shape, np.uint64))  # MATLAB's dimensions
        _h5_attrs(ds, cls, MATLAB_empty=np.uint8(1), **extra)
        return ds
    arr = arr.reshape(arr.shape + (1,) * (2 - arr.ndim)) if arr.ndim < 2 else arr
    ds = parent.create_dataset(name, data=(arr.astype(np.uint8) if cls == "logical" else arr).T)
    _h5_attrs(ds, cls, **extra)
    return ds


def write_v73(path, variables):
    write_mat(path, {}, "v7.3")  # MATLAB's 512-byte header
    with h5py.File(path, "a") as fh:
        for name, value in variables.items():
            _h5_value(fh, fh, name, value)


def _same(a, b):
    """Equal values of equal types (arrays: same shape, dtype and elements)."""
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return isinstance(a, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


KINDS = {  # name: (value written, value read)
    "char row": ("left", "left"),
    "char empty": ("", ""),
    "char matrix": (Char(["left ", "right"]), ["left ", "right"]),
    "char column": (Char(["L", "R", "L"]), ["L", "R", "L"]),
    "cellstr row": (Cell(["a", "bb", "ccc"], (1, 3)), ["a", "bb", "ccc"]),
    "cellstr column": (Cell(["a", "bb"], (2, 1)), ["a", "bb"]),
    "cellstr 1x1": (Cell(["only"], (1, 1)), ["only"]),
    "cell 2x3": (Cell(["a", "d", "b", "e", "c", "f"], (2, 3)), [["a", "b", "c"], ["d", "e", "f"]]),
    "struct": ({"name": "rat1", "dt": np.array([[0.025]]), "counts": np.arange(6.0).reshape(2, 3)},
               {"name": "rat1", "dt": 0.025, "counts": np.arange(6.0).reshape(2, 3)}),
}
NUMERIC = {  # written and read back alike: MATLAB's shape and class
    "3-D": np.arange(24.0).reshape(2, 3, 4), "column": np.ones((5, 1)), "scalar": np.array([[2.5]]),
    "single": np.array([[1.5, 2.5]], np.float32), "int8_scalar": np.array([[-3]], np.int8),
    "logical": np.array([[True, False, True]]), "empty": np.zeros((0, 3)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_class_reads_the_same_from_v5_and_v73(tmp_path, kind):
    written, expected = KINDS[kind]
    got = {}
    for version, writer in (("v5", write_v5), ("v7.3", write_v73)):
        path = tmp_path / f"{version}.mat"
        writer(path, {"x": written, "other": np.array([[1.0]])})
        assert mat_version(path) == version
        got[version] = read_mat(path)
        assert set(got[version]) == {"x", "other"}, version
        assert _same(got[version]["x"], expected), (version, got[version]["x"])
    assert _same(got["v5"]["x"], got["v7.3"]["x"])


def test_numeric_arrays_keep_matlab_shapes_and_classes(tmp_path):
    """Shapes with singleton dimensions, scalars as 1x1, int8, single, logical as bool, and an
    empty 0x3 (v7.3 stores an empty array as its dimensions)."""
    got = {}
    for version, writer in (("v5", write_v5), ("v7.3", write_v73)):
        path = tmp_path / f"{version}.mat"
        writer(path, NUMERIC)
        got[version] = read_mat(path)
        for k, expected in NUMERIC.items():
            assert _same(got[version][k], expected), (version, k, got[version][k])


def test_read_only_the_named_variables(tmp_path):
    for version, writer in (("v5", write_v5), ("v7.3", write_v73)):
        path = tmp_path / f"{version}.mat"
        writer(path, {"a": np.array([[1.0]]), "b": "text"})
        assert _same(read_mat(path, ["b", "absent"]), {"b": "text"})


def test_string_array_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "strings.mat"
    write_v73(path, {"conditions": String(), "dt": np.array([[0.025]])})
    with pytest.raises(NeurotrainError, match=r"'conditions' is a MATLAB string array.*cellstr\(conditions\)") as exc:
        read_mat(path)
    assert str(path) in str(exc.value)
    assert _same(read_mat(path, ["dt"]), {"dt": np.array([[0.025]])})  # another variable still reads


def test_class_object_is_refused_with_its_class(tmp_path):
    path = tmp_path / "table.mat"
    write_v73(path, {"dt": np.array([[0.025]])})
    with h5py.File(path, "a") as fh:  # a MATLAB table: an object of the file's subsystem
        ds = fh.create_dataset("trials", data=np.array([[3707764736], [2], [1], [1], [2], [1]], np.uint32))
        _h5_attrs(ds, "table", MATLAB_object_decode=np.int32(3))
    with pytest.raises(NeurotrainError, match=r"'trials' is a MATLAB object \(class table\), which cannot be read"):
        read_mat(path)
    assert _same(read_mat(path, ["dt"]), {"dt": np.array([[0.025]])})


def test_hdf5_without_matlab_header_is_refused(tmp_path):
    path = tmp_path / "plain.mat"
    with h5py.File(path, "w") as fh:
        fh["spikes"] = np.ones((4, 5, 6))
    with pytest.raises(NeurotrainError, match="HDF5 file without MATLAB's v7.3 header") as exc:
        read_mat(path)
    assert str(path) in str(exc.value)


def test_v73_external_link_is_refused(tmp_path):
    (tmp_path / "elsewhere.h5").write_bytes(b"")
    path = tmp_path / "linked.mat"
    write_v73(path, {"conditions": Cell(["a", "b"], (1, 2))})
    with h5py.File(path, "a") as fh:
        fh["spikes"] = h5py.ExternalLink(str(tmp_path / "elsewhere.h5"), "/spikes")
    with pytest.raises(NeurotrainError, match="external") as exc:
        read_mat(path)
    assert str(path) in str(exc.value)


CONDITIONS = {  # six trials, text conditions saved in each way MATLAB allows (numbers: test_load_dataset)
    "char matrix": (Char(["left ", "right", "left ", "right", "left ", "right"]), ["left", "right"]),
    "char row": ("ABABAB", ["A", "B"]),
    "cellstr": (Cell(["left", "right", "left", "right", "left", "right"], (1, 6)), ["left", "right"]),
    "cellstr column": (Cell(["go", "stop", "go", "stop", "go", "stop"], (6, 1)), ["go", "stop"]),
}


@pytest.mark.parametrize("form", list(CONDITIONS))
@pytest.mark.parametrize("writer", [write_v5, write_v73], ids=["v5", "v7.3"])
def test_conditions_as_numbers_char_or_cellstr(tmp_path, cfg, form, writer):
    written, values = CONDITIONS[form]
    v = _vars()
    v["conditions"] = written
    path = tmp_path / "d.mat"
    writer(path, v)
    d = load_mat_dataset(path, cfg["data"])
    assert list(d["conditions"]) == [0, 1, 0, 1, 0, 1]
    assert list(d["condition_values"]) == values
    assert d["spikes"].shape == (6, 5, 4) and d["dt"] == 0.025


@pytest.mark.parametrize("written,needle", [
    (String(), r"'conditions' is a MATLAB string array.*cellstr\(conditions\)"),
    (Cell(["a", "b", "a", "b", "a", "  "], (1, 6)), "'conditions' has an empty label for trial 6"),
    ({"a": np.array([[1.0]])}, "'conditions' must hold one label per trial.*not a struct"),
    (Char(["left ", "right", "left ", "right", "left "]), "'conditions' has 5 entries, expected 6"),
    (Cell(["a", "b", "a", "b", "a", "c"], (1, 6)), "condition 'c' has 1 trial"),
])
def test_bad_text_conditions(tmp_path, cfg, written, needle):
    v = _vars()
    v["conditions"] = written
    path = tmp_path / "bad.mat"
    write_v73(path, v)
    with pytest.raises(NeurotrainError, match=needle) as exc:
        load_mat_dataset(path, cfg["data"])
    assert str(path) in str(exc.value)


def test_cli_char_conditions_v73_and_v5_give_the_same_processed_file(tmp_path):
    """`neurotrain preprocess` on a user's export with char conditions: the v7.3 file and the
    same variables saved as v5 give identical processed arrays (relative paths, as a rule runs)."""
    v = _vars()
    v["conditions"] = Char(["left ", "right", "left ", "right", "left ", "right"])
    write_v73(tmp_path / "export_v73.mat", v)
    write_v5(tmp_path / "export_v5.mat", v)
    (tmp_path / "user.yaml").write_text("ei_rnn:\n  data:\n    source: mat\n    path: export_v73.mat\n")
    arrays = {}
    for version in ("v73", "v5"):
        r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--config", "user.yaml",
                            "--raw", f"export_{version}.mat", "--out", f"processed/{version}.h5"],
                           cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with h5py.File(tmp_path / "processed" / f"{version}.h5") as fh:
            arrays[version] = {k: fh[k][()] for k in fh}
    assert arrays["v73"].keys() == arrays["v5"].keys()
    for k in arrays["v5"]:
        assert np.array_equal(arrays["v73"][k], arrays["v5"][k]), k
    assert [s.decode() for s in arrays["v5"]["condition_values"]] == ["left", "right"]
    assert list(arrays["v5"]["conditions"]) == [0, 1, 0, 1, 0, 1]

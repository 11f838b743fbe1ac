"""The .mat loader: v5 and v7.3 round trips, MATLAB shapes, and every kind of bad input."""

import subprocess

from conftest import NEUROTRAIN

import h5py
import numpy as np
import pytest

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
        tr, va = set(fh["train_idx"][()]), set(fh["val_idx"][()])
        assert tr.isdisjoint(va) and tr | va == set(range(6))
        assert fh.attrs["dt"] == 0.025


def test_cli_bad_file_exits_nonzero_without_output(tmp_path):
    text = tmp_path / "export.mat"
    text.write_text("not matlab")
    out = tmp_path / "processed.h5"
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--raw", str(text), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and str(text) in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [text]


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
    bad = _write_bad(tmp_path, kind)
    out = tmp_path / "out" / "processed.h5"
    r = subprocess.run([NEUROTRAIN, "preprocess", "--system", "ei_rnn", "--raw", str(bad), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_v73_empty_outputs_mean_no_outputs(tmp_path, cfg):
    path = tmp_path / "d.mat"
    write_mat(path, _vars(), "v7.3")
    with h5py.File(path, "a") as fh:  # MATLAB writes `outputs = []` as its dimensions, flagged empty
        ds = fh.create_dataset("outputs", data=np.array([0, 0], dtype=np.uint64))
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        ds.attrs["MATLAB_empty"] = np.uint8(1)
    assert load_mat_dataset(path, cfg["data"])["outputs"].shape == (6, 5, 0)

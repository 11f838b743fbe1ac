"""The cebra system: data sources (embedded, rat download, NWB), bad input, model sharing,
training/resume with the cebra solver, analysis pieces."""

import copy
import gzip
import hashlib
import io
import json
import os
import signal
from pathlib import Path

import h5py
import joblib
import numpy as np
import pytest
import torch

from neurotrain.systems.cebra.analyze import consistency_matrix
from neurotrain.config import validate
from neurotrain.systems.cebra import data as dc
from neurotrain.fetch import download
from neurotrain.errors import Interrupted, NeurotrainError

from _http import LoopbackServer  # noqa: I001 - tests/ helper
from conftest import refused_line

SMOKE = {"data": {"embedded": {"n_neurons": [10, 12, 14], "n_time": 400}, "min_session_bins": 50},
         "model": {"num_units": 16, "output_dim": 3},
         "training": {"max_steps": 6, "batch_size": 64, "checkpoint_every": 2},
         "analysis": {"knn_neighbors": 5, "consistency_bins": 10}}


@pytest.fixture()
def ccfg():
    return validate({"cebra": json.loads(json.dumps(SMOKE))})["cebra"]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    cfg = validate({"cebra": json.loads(json.dumps(SMOKE))})["cebra"]
    d = tmp_path_factory.mktemp("cebra")
    dc.generate_embedded(cfg, d / "raw")
    dc.preprocess_raw(cfg, [d / "raw"], d / "p.h5")
    return d


# ----------------------------------------------------------------------------- downloads
def _rat_file(T=300, N=7, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    joblib.dump({"spikes": rng.poisson(0.5, (T, N)).astype(np.float32),
                 "position": np.c_[np.linspace(0, 1.6, T), np.ones(T), np.zeros(T)].astype(np.float32)}, buf)
    return gzip.compress(buf.getvalue())


def test_download_checks_md5_retries_and_is_atomic(tmp_path):
    body = b"x" * 5000
    md5 = hashlib.md5(body).hexdigest()
    srv = LoopbackServer({"a.bin": body}, fail_first=1)
    try:
        out = download(f"{srv.url}/a.bin", tmp_path / "a.bin", md5, retries=3, backoff=0)
        assert out.read_bytes() == body and srv.hits == 2  # one 503, then success
        with pytest.raises(NeurotrainError, match="checksum mismatch") as exc:
            download(f"{srv.url}/a.bin", tmp_path / "b.bin", "0" * 32, retries=2, backoff=0)
        assert "download failed after 2 attempts" in str(exc.value)
        with pytest.raises(NeurotrainError, match="404"):
            download(f"{srv.url}/missing.bin", tmp_path / "c.bin", md5, retries=1, backoff=0)
    finally:
        srv.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"], "no partial or temporary files"


def test_rat_source_end_to_end_from_local_server(tmp_path, ccfg):
    files = {f"{n}.jl.gz": _rat_file(seed=i) for i, n in enumerate(["achilles", "buddy"])}
    srv = LoopbackServer(files)
    try:
        ccfg["data"].update(source="rat")
        ccfg["data"]["rat"].update(names=["achilles", "buddy"], url=srv.url + "/{name}.jl.gz",
                                   md5={n.removesuffix(".jl.gz"): hashlib.md5(b).hexdigest() for n, b in files.items()})
        for name, body in files.items():
            download(f"{srv.url}/{name}", tmp_path / name, hashlib.md5(body).hexdigest())
    finally:
        srv.close()
    dc.preprocess_raw(ccfg, [tmp_path / n for n in files], tmp_path / "p.h5")
    d = dc.load_processed(tmp_path / "p.h5")
    assert d["names"] == ["achilles", "buddy"] and d["sessions"][0]["spikes"].shape == (300, 7)
    assert d["sessions"][0]["behavior"].shape == (300, 3) and d["dt"] == 0.025


def test_rat_pickle_not_opened_without_checksum(tmp_path, ccfg, monkeypatch):
    path = tmp_path / "achilles.jl.gz"
    path.write_bytes(_rat_file())
    opened = []
    monkeypatch.setattr(joblib, "load", lambda *a, **k: opened.append(1))
    with pytest.raises(NeurotrainError, match="checksum mismatch") as exc:
        dc.load_rat(path, "0" * 32)
    assert str(path) in str(exc.value) and not opened


def test_corrupt_joblib_named(tmp_path):
    path = tmp_path / "buddy.jl.gz"
    path.write_bytes(gzip.compress(b"not a pickle"))
    with pytest.raises(NeurotrainError, match="corrupt joblib") as exc:
        dc.load_rat(path, hashlib.md5(path.read_bytes()).hexdigest())
    assert str(path) in str(exc.value)


# ----------------------------------------------------------------------------- NWB
def _nwb(path: Path, n_units=5, seconds=20.0, seed=0):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import Position

    rng = np.random.default_rng(seed)
    nwb = NWBFile(session_description="test", identifier=f"id{seed}", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    for _ in range(n_units):
        nwb.add_unit(spike_times=np.sort(rng.uniform(0, seconds, 200)))
    pos = Position(name="Position")
    t = np.arange(0, seconds, 0.01)
    pos.create_spatial_series(name="position", data=np.sin(t)[:, None], timestamps=t, reference_frame="track")
    nwb.create_processing_module("behavior", "behaviour").add(pos)
    with NWBHDF5IO(str(path), "w") as io_:
        io_.write(nwb)


def test_nwb_sessions(tmp_path, ccfg):
    paths = [tmp_path / "m1.nwb", tmp_path / "m2.nwb"]
    _nwb(paths[0], 5, seed=0)
    _nwb(paths[1], 7, seed=1)
    ccfg["data"].update(source="nwb")
    ccfg["data"]["nwb"]["paths"] = [str(p) for p in paths]
    dc.preprocess_raw(ccfg, paths, tmp_path / "p.h5")
    d = dc.load_processed(tmp_path / "p.h5")
    assert d["names"] == ["m1", "m2"]
    s = d["sessions"][1]
    assert s["spikes"].shape[1] == 7 and s["spikes"].shape[0] == s["behavior"].shape[0]
    assert abs(s["spikes"].shape[0] - round(19.99 / 0.025)) <= 1
    assert s["spikes"].sum() == pytest.approx(7 * 200, abs=7)


def test_nwb_bad_files(tmp_path, ccfg):
    ccfg["data"].update(source="nwb")
    bad = tmp_path / "broken.nwb"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 100)
    with pytest.raises(NeurotrainError, match="cannot read NWB") as exc:
        dc.preprocess_raw(ccfg, [bad], tmp_path / "p.h5")
    assert str(bad) in str(exc.value) and not (tmp_path / "p.h5").exists()
    good = tmp_path / "m.nwb"
    _nwb(good)
    ccfg["data"]["nwb"]["behavior"] = "speed"
    with pytest.raises(NeurotrainError, match="no behaviour time series named 'speed'"):
        dc.preprocess_raw(ccfg, [good], tmp_path / "p.h5")


# NWB as the field writes it: declared units (conversion, offset), timestamps with dropped
# frames or stored out of order, a Units table on another time base. Built here with pynwb and
# preprocessed through the command line the workflow runs (relative paths, as Snakemake passes).
def _track(t):
    """The true position (m) at time t (s): 1 + 0.9 sin(2 pi t / 7), a run along a 2 m track."""
    return 1.0 + 0.9 * np.sin(2 * np.pi * np.asarray(t, float) / 7.0)


def _cebra_nwb(path: Path, timestamps=None, data=None, unit="m", conversion=1.0, offset=0.0, seconds=20.0,
               spikes=None, obs_intervals=None, name="position", seed=0):
    """A session: a Units table (``spikes``: one array of spike times per unit, s; default 4
    units of 150 uniform spikes) and a behaviour TimeSeries ``name`` [n, 1] at 30 fps (``data``
    as stored, with ``unit``, ``conversion``, ``offset``; default the true position in metres)."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 1 / 30) if timestamps is None else np.asarray(timestamps, float)
    if data is None:
        data = _track(np.nan_to_num(t))
    if spikes is None:
        spikes = [np.sort(rng.uniform(0, seconds, 150)) for _ in range(4)]
    nwb = NWBFile(session_description="test", identifier=f"s{seed}", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    for st in spikes:
        nwb.add_unit(spike_times=st, **({} if obs_intervals is None else {"obs_intervals": obs_intervals}))
    nwb.create_processing_module("behavior", "behaviour").add(
        TimeSeries(name=name, data=np.asarray(data)[:, None] if np.ndim(data) == 1 else np.asarray(data), unit=unit,
                   conversion=conversion, offset=offset, timestamps=t))
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), "w") as io_:
        io_.write(nwb)
    return spikes


def _preprocess_nwb(tmp_path: Path, files: list[str], data_cfg=None, **nwb_cfg):
    """``neurotrain preprocess`` of the NWB sessions ``files`` (relative to ``tmp_path``, the
    working directory), as the workflow's rule runs it; the output is data/processed/cebra.h5."""
    import subprocess

    import yaml
    from conftest import NEUROTRAIN

    block = json.loads(json.dumps(SMOKE))
    block["data"].update(source="nwb", nwb={"paths": files, "behavior": "position", **nwb_cfg}, **(data_cfg or {}))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"systems": ["cebra"], "cebra": block}))
    return subprocess.run([NEUROTRAIN, "preprocess", "--system", "cebra", "--config", "config.yaml", "--raw", *files,
                           "--out", "data/processed/cebra.h5"], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def _bins(t0, t1, dt=0.025):
    edges = np.arange(t0, t1 + dt / 2, dt)
    return edges, edges[:-1] + dt / 2


def test_nwb_behaviour_read_in_declared_units(tmp_path):
    """Position stored as int32 millimetres from a point 0.5 m before the track (unit 'm',
    conversion 0.001, offset -0.5) reads as metres; spike counts are the spike times binned."""
    t = np.arange(0, 20.0, 1 / 30)
    stored = np.round((_track(t) + 0.5) / 0.001).astype(np.int32)
    spikes = _cebra_nwb(tmp_path / "raw" / "m1.nwb", data=stored, conversion=0.001, offset=-0.5)
    _cebra_nwb(tmp_path / "raw" / "m2.nwb", seed=1)  # plain float metres
    r = _preprocess_nwb(tmp_path, ["raw/m1.nwb", "raw/m2.nwb"])
    assert r.returncode == 0, r.stderr
    d = dc.load_processed(tmp_path / "data" / "processed" / "cebra.h5")
    edges, centres = _bins(t[0], t[-1])
    for s in d["sessions"]:
        assert np.allclose(s["behavior"][:, 0], _track(centres), atol=2e-3)
    assert np.array_equal(d["sessions"][0]["spikes"], np.stack([np.histogram(x, edges)[0] for x in spikes], 1))


@pytest.mark.parametrize("nan_at", [[200, 201, -1], [200, 201]], ids=["last-frame", "inside"])
def test_nwb_nan_timestamps_are_gaps(tmp_path, nan_at):
    """Dropped video frames left as NaN timestamps (one of them the last): those samples are
    dropped (their stored values are garbage), the log says so naming the file and series, and
    the behaviour between the neighbours follows the truth."""
    t = np.arange(0, 20.0, 1 / 30)
    _cebra_nwb(tmp_path / "raw" / "s0.nwb")
    bad_t, bad_x = t.copy(), _track(t)
    bad_t[nan_at], bad_x[nan_at] = np.nan, 99.0
    _cebra_nwb(tmp_path / "raw" / "s1.nwb", timestamps=bad_t, data=bad_x, seed=1)
    r = _preprocess_nwb(tmp_path, ["raw/s0.nwb", "raw/s1.nwb"])
    assert r.returncode == 0, r.stderr
    assert f"raw/s1.nwb: position: {len(nan_at)} sample(s) with NaN timestamps dropped" in r.stderr
    assert "raw/s0.nwb: position" not in r.stderr
    d = dc.load_processed(tmp_path / "data" / "processed" / "cebra.h5")
    s1 = d["sessions"][1]
    _, centres = _bins(t[0], np.nanmax(bad_t))
    assert len(s1["behavior"]) == len(centres)
    assert np.allclose(s1["behavior"][:, 0], _track(centres), atol=2e-3)


def test_nwb_unsorted_timestamps_refused(tmp_path):
    """Frames of 10-15 s stored before those of 5-10 s (each sample right for its own time):
    refused in one line naming the file and the series, never binned as stored."""
    t = np.arange(0, 20.0, 1 / 30)
    t = np.r_[t[:150], t[300:450], t[150:300], t[450:]]
    _cebra_nwb(tmp_path / "raw" / "s0.nwb")
    _cebra_nwb(tmp_path / "raw" / "s1.nwb", timestamps=t, data=_track(t), seed=1)
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/s0.nwb", "raw/s1.nwb"]))
    assert line.startswith("error: raw/s1.nwb: position: timestamps are not increasing"), line


def test_nwb_series_not_found_lists_the_names(tmp_path):
    _cebra_nwb(tmp_path / "raw" / "s0.nwb", name="linear_position")
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/s0.nwb"]))
    assert line == ("error: raw/s0.nwb: no behaviour time series named 'position' (config key "
                    "cebra.data.nwb.behavior); the file has these time series: 'linear_position'")



def test_nwb_series_name_held_twice_needs_its_path(tmp_path):
    """Two series named 'position' (raw pixels in acquisition, metres in a processing module):
    refused, listing both; their path in the file selects one."""
    from pynwb import NWBHDF5IO, TimeSeries

    t = np.arange(0, 20.0, 1 / 30)
    _cebra_nwb(tmp_path / "raw" / "s0.nwb")
    with NWBHDF5IO(str(tmp_path / "raw" / "s0.nwb"), "a") as io_:
        nwb = io_.read()
        nwb.add_acquisition(TimeSeries(name="position", data=_track(t)[:, None] * 300, unit="pixels", timestamps=t))
        io_.write(nwb)
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/s0.nwb"]))
    assert line == ("error: raw/s0.nwb: 2 time series are named 'position' (acquisition/position, "
                    "processing/behavior/position); give the path of one in config key cebra.data.nwb.behavior")
    r = _preprocess_nwb(tmp_path, ["raw/s0.nwb"], behavior="processing/behavior/position")
    assert r.returncode == 0, r.stderr
    d = dc.load_processed(tmp_path / "data" / "processed" / "cebra.h5")
    assert np.allclose(d["sessions"][0]["behavior"][:, 0], _track(_bins(t[0], t[-1])[1]), atol=2e-3)

def test_nwb_sessions_in_different_units_refused(tmp_path):
    """One session in metres, the next in centimetres: not one behaviour variable."""
    t = np.arange(0, 20.0, 1 / 30)
    _cebra_nwb(tmp_path / "raw" / "s0.nwb")
    _cebra_nwb(tmp_path / "raw" / "s1.nwb", data=_track(t) * 100, unit="cm", seed=1)
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/s0.nwb", "raw/s1.nwb"]))
    assert line.startswith("error: raw/s1.nwb: position: behaviour declared in 'cm', but in 'm' in "
                           "raw/s0.nwb"), line


@pytest.mark.parametrize("case,needle", [
    ("milliseconds", "error: raw/s0.nwb: 120 of 120 spike times of the Units table (5000-19990 s) fall outside the "
                     "span of 'position'"),
    ("observed_part", "error: raw/s0.nwb: unit 0 of the Units table is observed 0-8 s (obs_intervals), not over the "
                      "whole binned span"),
])
def test_nwb_units_table_time_base(tmp_path, case, needle):
    """The Units table's spike times are seconds on the behaviour's time base: spike times in
    milliseconds match nothing and are refused; a unit observed over part of the session only
    would read as silent elsewhere and is refused."""
    spikes = [np.linspace(5.0, 19.99, 40) * (1000 if case == "milliseconds" else 1) for _ in range(3)]
    _cebra_nwb(tmp_path / "raw" / "s0.nwb", spikes=spikes,
               obs_intervals=np.array([[0.0, 8.0]]) if case == "observed_part" else None)
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/s0.nwb"]))
    assert line.startswith(needle), line


# ----------------------------------------------------------------------------- bad input
def _npz_sessions(folder: Path, sessions):
    folder.mkdir()
    for i, s in enumerate(sessions):
        np.savez(folder / f"session{i}.npz", dt=np.float64(0.025), **s)


def _session(T=200, N=6, seed=0):
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 6, T)[:, None].astype(np.float32)
    return {"spikes": rng.poisson(1.0, (T, N)).astype(np.float32), "behavior": u, "latent": np.c_[u, u]}


@pytest.mark.parametrize("mutate,needle", [
    (lambda s: s[1]["behavior"].__setitem__((3, 0), np.nan), "session1: behavior has 1 NaN/Inf"),
    (lambda s: s[0]["spikes"].__setitem__((0, 0), np.inf), "session0: spikes has 1 NaN/Inf"),
    (lambda s: s[1].update(spikes=s[1]["spikes"][:40], behavior=s[1]["behavior"][:40], latent=s[1]["latent"][:40]),
     "session1: 40 time bins, shorter than the minimum 50"),
    (lambda s: s[0].update(behavior=s[0]["behavior"][:150]), "behaviour has shape"),
])
def test_bad_sessions_named(tmp_path, ccfg, mutate, needle):
    sessions = [_session(seed=0), _session(seed=1)]
    mutate(sessions)
    _npz_sessions(tmp_path / "raw", sessions)
    with pytest.raises(NeurotrainError) as exc:
        dc.preprocess_raw(ccfg, [tmp_path / "raw"], tmp_path / "p.h5")
    assert needle in str(exc.value) and str(tmp_path / "raw") in str(exc.value)
    assert not (tmp_path / "p.h5").exists()


def test_shared_model_refuses_mismatched_sessions(embedded, ccfg, tmp_path):
    from neurotrain.systems.cebra.train import run_training

    ccfg["model"]["sharing"] = "shared"
    with pytest.raises(NeurotrainError, match=r"needs every session to have 10 neurons.*session1 \(12 neurons\)"):
        run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_session_shorter_than_receptive_field(tmp_path, ccfg):
    from neurotrain.systems.cebra.train import run_training

    ccfg["data"]["min_session_bins"] = 11
    ccfg["data"]["test_fraction"] = 0.5
    ccfg["data"]["split_gap"] = 9
    _npz_sessions(tmp_path / "raw", [_session(T=30, seed=0), _session(T=200, seed=1)])
    dc.preprocess_raw(ccfg, [tmp_path / "raw"], tmp_path / "p.h5")
    with pytest.raises(NeurotrainError, match="6 training bins, not more than the model's receptive field"):
        run_training(ccfg, str(tmp_path / "p.h5"), str(tmp_path / "m"))
    ccfg["data"]["split_gap"] = 5  # fewer bins apart than a window spans
    _npz_sessions(tmp_path / "raw2", [_session(T=200, seed=0), _session(T=200, seed=1)])
    dc.preprocess_raw(ccfg, [tmp_path / "raw2"], tmp_path / "q.h5")
    with pytest.raises(NeurotrainError, match="cebra.data.split_gap: 5 bins between"):
        run_training(ccfg, str(tmp_path / "q.h5"), str(tmp_path / "n"))


def test_one_session_trains_with_the_single_session_solver(tmp_path, ccfg):
    """One rat, or one NWB file, is a dataset: CEBRA's single-session solver trains it, the
    parts are a gap apart, and consistency (which needs two sessions) is named as not scored."""
    from neurotrain.systems.cebra.analyze import analyze
    from neurotrain.systems.cebra.extract import extract
    from neurotrain.systems.cebra.train import run_training
    from neurotrain.training.checkpoint import load_checkpoint

    ccfg["data"]["embedded"]["n_neurons"] = [12]
    dc.generate_embedded(ccfg, tmp_path / "raw")
    dc.preprocess_raw(ccfg, [tmp_path / "raw"], tmp_path / "p.h5")
    d = dc.load_processed(tmp_path / "p.h5")
    s = d["sessions"][0]
    assert s["test_idx"][0] - s["train_idx"][-1] - 1 == ccfg["data"]["split_gap"]
    run_training(ccfg, str(tmp_path / "p.h5"), str(tmp_path / "run" / "model"))
    ck = load_checkpoint(tmp_path / "run" / "model" / "model_final.pt")
    assert ck["model_config"]["n_features"] == [12]
    extract(ccfg, str(tmp_path / "run" / "model"), str(tmp_path / "p.h5"), str(tmp_path / "run"))
    split = np.load(tmp_path / "run" / "outputs" / "split_session0.npy")
    assert (split == -1).sum() == ccfg["data"]["split_gap"]
    _assert_cebra_load_reproduces(tmp_path / "run", tmp_path / "p.h5", ["session0"])
    summary = analyze(ccfg, str(tmp_path / "run"), str(tmp_path / "p.h5"), str(tmp_path / "raw"))
    assert summary["consistency_min"] is None and summary["quality"]["consistency_passes"] is None
    assert "one session" in summary["quality"]["note"]
    assert summary["quality"]["passes"] == summary["quality"]["reconstruction_passes"]


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("sharing", ["per_session", "shared"])
def test_train_extract_both_sharing_modes(tmp_path, ccfg, sharing):
    from neurotrain.systems.cebra.extract import extract
    from neurotrain.systems.cebra.train import run_training
    from neurotrain.training.checkpoint import load_checkpoint

    ccfg["data"]["embedded"]["n_neurons"] = [12, 12] if sharing == "shared" else [10, 14]
    ccfg["model"]["sharing"] = sharing
    dc.generate_embedded(ccfg, tmp_path / "raw")
    dc.preprocess_raw(ccfg, [tmp_path / "raw"], tmp_path / "p.h5")
    summary = run_training(ccfg, str(tmp_path / "p.h5"), str(tmp_path / "model"))
    assert summary["steps"] == 6
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert len(log["history"]["total"]) == 6 and len(log["history"]["goodness_of_fit_bits"]) == 6
    ck = load_checkpoint(tmp_path / "model" / "model_final.pt")
    keys = list(ck["solver"]["model"])
    if sharing == "shared":
        a, b = ck["solver"]["model"]["0.net.0.weight"], ck["solver"]["model"]["1.net.0.weight"]
        assert torch.equal(a, b)
    extract(ccfg, str(tmp_path / "model"), str(tmp_path / "p.h5"), str(tmp_path))
    emb = np.load(tmp_path / "outputs" / "embedding_session1.npy")
    assert emb.shape == (400, 3) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    encoders = sorted(p.name for p in (tmp_path / "weights").iterdir() if p.is_dir())
    assert encoders == (["shared"] if sharing == "shared" else ["session0_session0", "session1_session1"])
    assert keys
    _assert_cebra_load_reproduces(tmp_path, tmp_path / "p.h5", ["session0", "session1"])


def _assert_cebra_load_reproduces(run: Path, processed: Path, names: list[str]) -> None:
    """export/cebra_model.pt loads with cebra's own CEBRA.load, from another working folder, and
    its transform gives the workflow's embedding of the training and held-out part of every session."""
    import cebra

    here = os.getcwd()
    os.chdir(run.parent)
    try:
        model = cebra.CEBRA.load(str(run / "export" / "cebra_model.pt"))
    finally:
        os.chdir(here)
    sessions = dc.load_processed(processed)["sessions"]
    for i, name in enumerate(names):
        split = np.load(run / "outputs" / f"split_{name}.npy")
        want = np.load(run / "outputs" / f"embedding_{name}.npy")
        for code in (0, 1):
            x = sessions[i]["spikes"][split == code]
            got = model.transform(x, session_id=i) if len(names) > 1 else model.transform(x)
            np.testing.assert_allclose(got, want[split == code], atol=1e-6)


def test_untrained_encoders_are_the_training_runs_initial_ones(embedded, ccfg, tmp_path, monkeypatch):
    """CEBRA's untrained reference (extract: seed every generator, then build_models, as
    run_preamble and run_training do) holds exactly the weights training started from."""
    from neurotrain.systems.cebra import train as tr
    from neurotrain.training.checkpoint import load_checkpoint, seed_everything

    seen = []
    real = tr.build_models

    def recording(mc):
        models = real(mc)
        seen.append({n: v.detach().clone() for n, v in models.state_dict().items()})
        return models

    monkeypatch.setattr(tr, "build_models", recording)
    tr.run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "m"))
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path / "m" / "model_final.pt")
    seed_everything(ck["config"]["training"]["seed"])
    init = tr.build_models(ck["model_config"]).state_dict()
    assert seen and all(torch.equal(init[n], v) for n, v in seen[0].items())
    assert not all(torch.equal(ck["solver"]["model"][n], v) for n, v in seen[0].items())


def test_interrupted_training_resumes_exactly(embedded, ccfg, tmp_path, monkeypatch):
    import cebra.solver.base as base

    from neurotrain.systems.cebra.train import run_training
    from neurotrain.training.checkpoint import load_checkpoint

    run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "full"))
    original = base.Solver.step
    calls = {"n": 0}

    def step(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(base.Solver, "step", step)
    with pytest.raises(Interrupted):
        run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "cut"))
    monkeypatch.setattr(base.Solver, "step", original)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["progress"]["step"] == 3
    summary = run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "cut"))
    assert summary["resumed_from_step"] == 3
    a = load_checkpoint(tmp_path / "full" / "model_final.pt")["solver"]["model"]
    b = load_checkpoint(tmp_path / "cut" / "model_final.pt")["solver"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = json.loads((tmp_path / "full" / "training_log.json").read_text())["history"]["total"]
    lb = json.loads((tmp_path / "cut" / "training_log.json").read_text())["history"]["total"]
    assert la == lb


class _Died(BaseException):
    """The process dying (SIGKILL) at a chosen instruction: nothing after it runs."""


def test_death_between_the_periodic_state_and_last_resumes_from_the_periodic_one(embedded, ccfg, tmp_path,
                                                                                   monkeypatch):
    """A checkpoint writes step{N}.pt, then last.pt; a SIGKILL between the two at the first
    checkpoint leaves step{N}.pt alone, and the rerun resumes from it to the uninterrupted weights."""
    import neurotrain.systems.cebra.train as tr
    from neurotrain.training.checkpoint import load_checkpoint

    ccfg["training"].update(max_steps=6, checkpoint_every=2)
    tr.run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "full"))
    original = tr.save_checkpoint

    def save(path, state):
        if Path(path).name == "last.pt":
            raise _Died
        original(path, state)

    monkeypatch.setattr(tr, "save_checkpoint", save)
    with pytest.raises(_Died):
        tr.run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "cut"))
    monkeypatch.setattr(tr, "save_checkpoint", original)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step2.pt"]
    summary = tr.run_training(ccfg, str(embedded / "p.h5"), str(tmp_path / "cut"))
    assert summary["resumed_from_step"] == 2
    a = load_checkpoint(tmp_path / "full" / "model_final.pt")["solver"]["model"]
    b = load_checkpoint(tmp_path / "cut" / "model_final.pt")["solver"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- analysis
def test_fast_positive_search_draws_what_cebras_loader_draws(ccfg):
    """The training loader's positive-sample search (query-major distances) picks, from the same
    random streams, the very reference, positive and negative indices of CEBRA's own loader."""
    import cebra.data

    from neurotrain.systems.cebra.train import RowMajorIndex, make_loader
    from neurotrain.training.checkpoint import seed_everything

    rng = np.random.default_rng(0)
    behaviour = np.round(rng.uniform(0, 6.3, (900, 1)), 2).astype(np.float32)  # rounded: many ties
    coll = cebra.data.DatasetCollection(*[cebra.data.TensorDataset(torch.randn(900, n), continuous=torch.as_tensor(behaviour))
                                          for n in (5, 7)])
    t = ccfg["training"]

    def draws(loader):
        return [loader.get_indices(64) for _ in range(20)]

    seed_everything(7)
    ours = make_loader(coll, 20, t)
    assert all(isinstance(i, RowMajorIndex) for i in ours.sampler.index)
    got = draws(ours)
    seed_everything(7)
    want = draws(cebra.data.ContinuousMultiSessionDataLoader(coll, num_steps=20, batch_size=t["batch_size"],
                                                             conditional=t["conditional"], time_offset=t["time_offset"]))
    for g, w in zip(got, want):
        for field in ("reference", "positive", "negative"):
            np.testing.assert_array_equal(np.asarray(getattr(g, field)), np.asarray(getattr(w, field)))


def test_consistency_matrix_hand_case():
    rng = np.random.default_rng(0)
    u = [rng.uniform(0, 1, 500), rng.uniform(0, 1, 400)]
    base = lambda x: np.c_[np.cos(3 * x), np.sin(3 * x), x]  # noqa: E731
    A = rng.normal(size=(3, 3))
    embs = [base(u[0]), base(u[1]) @ A + 2.0]  # session 1 is a linear transform of session 0's map
    mat, unscored = consistency_matrix(embs, u, ["a", "b"], bins=20)
    assert np.isnan(mat[0, 0]) and np.isnan(mat[1, 1]) and unscored == []
    assert mat[0, 1] > 0.99 and mat[1, 0] > 0.99
    shuffled = [embs[0], rng.normal(size=(400, 3))]
    assert consistency_matrix(shuffled, u, ["a", "b"], bins=20)[0][0, 1] < 0.5
    # orientation (row = source, column = target, as CEBRA): a constant session 1 is predicted
    # exactly from session 0, while session 0 cannot be predicted from it
    const = np.tile([1.0, 0.0, 0.0], (400, 1))
    mat, _ = consistency_matrix([embs[0], const], u, ["a", "b"], bins=20)
    assert mat[0, 1] > 0.99 and mat[1, 0] < 0.01


def test_short_sessions_give_strict_json_and_a_report_that_names_unscored_pairs(tmp_path, ccfg):
    """Case consistency-uncovered-bins, embedded variant: sessions of 150 bins, whose held-out 30
    bins cover few behaviour bins. Every stage succeeds, metrics.json parses as strict JSON
    (no NaN literal), no consistency mean is made of NaN, and the report says which pairs were
    not scored and why instead of a bare FAIL."""
    from neurotrain.reports.render import render_report
    from neurotrain.systems.cebra.analyze import analyze
    from neurotrain.systems.cebra.extract import extract
    from neurotrain.systems.cebra.figures import render
    from neurotrain.systems.cebra.train import run_training

    ccfg["data"]["embedded"].update(n_neurons=[10, 12, 14], n_time=150)
    ccfg["data"]["min_session_bins"] = 100
    ccfg["analysis"]["consistency_bins"] = 100  # CEBRA's default: more bins than 30 held-out bins can cover
    dc.generate_embedded(ccfg, tmp_path / "raw")
    dc.preprocess_raw(ccfg, [tmp_path / "raw"], tmp_path / "p.h5")
    run = tmp_path / "run"
    run_training(ccfg, str(tmp_path / "p.h5"), str(run / "model"))
    extract(ccfg, str(run / "model"), str(tmp_path / "p.h5"), str(run))
    analyze(ccfg, str(run), str(tmp_path / "p.h5"), str(tmp_path / "raw"))
    m = json.loads((run / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"literal {c}"))
    assert m["consistency_unscored"] and all(u["reason"].startswith("the held-out part of ")
                                             for u in m["consistency_unscored"])
    if m["consistency_min"] is not None:
        assert np.isfinite(m["consistency_min"]) and m["consistency_pairs_scored"] >= 1
    render(ccfg, str(run))
    report = render_report("cebra", ccfg, str(run), None, Path(dc.__file__).parent / "report.md.j2").read_text()
    for u in m["consistency_unscored"]:
        assert f"{u['pair'][0]} and {u['pair'][1]}: {u['reason']}" in report


def test_consistency_is_cebras_own_score_and_uncovered_pairs_are_named():
    """Every pair's value is what cebra.sklearn.metrics.consistency_score returns for it; a
    session whose held-out part rests at one end of the track (case consistency-uncovered-bins)
    leaves its pairs unscored, named with the reason, and the other pair is still scored."""
    import cebra

    rng = np.random.default_rng(1)
    u = [rng.uniform(0, 1.6, 300), rng.uniform(0, 1.6, 280), rng.uniform(1.45, 1.6, 250)]
    embs = [np.c_[np.cos(2 * x), np.sin(2 * x), x] + 0.05 * rng.normal(size=(len(x), 3)) for x in u]
    mat, unscored = consistency_matrix(embs, u, ["s0", "s1", "s2"], bins=100)
    want, pairs, _ = cebra.sklearn.metrics.consistency_score(embs[:2], between="datasets", labels=u[:2],
                                                             dataset_ids=[0, 1], num_discretization_bins=100)
    for value, (a, b) in zip(want, pairs):
        assert mat[int(a), int(b)] == pytest.approx(value, abs=1e-12)
    assert np.isnan(mat[:, 2]).all() and np.isnan(mat[2]).all()
    assert [x["pair"] for x in unscored] == [["s0", "s2"], ["s1", "s2"]]
    assert unscored[0]["reason"].startswith("the held-out part of s2 leaves ")
    assert "behaviour bins over [" in unscored[0]["reason"] and "(CEBRA cannot align them)" in unscored[0]["reason"]


@pytest.mark.slow
def test_rat_source_through_snakemake(tmp_path):
    """One config switch selects the real data: fetch_dataset jobs download from a loopback
    server, checksums are checked, preprocess reads them."""
    import subprocess

    import yaml
    from conftest import snakemake_env, workflow_copy

    files = {f"{n}.jl.gz": _rat_file(seed=i) for i, n in enumerate(["achilles", "buddy"])}
    srv = LoopbackServer(files)
    try:
        wd = workflow_copy(tmp_path)
        (wd / "config" / "rat.yaml").write_text(yaml.safe_dump({"systems": ["cebra"], "cebra": {"data": {
            "source": "rat", "rat": {"names": ["achilles", "buddy"], "url": srv.url + "/{name}.jl.gz",
                                     "md5": {n.removesuffix(".jl.gz"): hashlib.md5(b).hexdigest() for n, b in files.items()}}}}}))
        r = subprocess.run(["snakemake", "--cores", "2", "data/processed/cebra.h5", "--configfile", "config/smoke.yaml",
                            "config/rat.yaml"], cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sorted(p.name for p in (wd / "data" / "raw" / "cebra" / "download").iterdir()) == sorted(files)
        with h5py.File(wd / "data" / "processed" / "cebra.h5") as fh:
            assert list(fh.attrs["session_names"]) == ["achilles", "buddy"]
        # a wrong checksum for one rat refetches only that rat, stops with the file named, and
        # leaves nothing behind; the other rat's download is kept
        buddy = wd / "data" / "raw" / "cebra" / "download" / "buddy.jl.gz"
        before = buddy.stat().st_mtime_ns
        bad = yaml.safe_load((wd / "config" / "rat.yaml").read_text())
        bad["cebra"]["data"]["rat"]["md5"]["achilles"] = "0" * 32
        (wd / "config" / "rat.yaml").write_text(yaml.safe_dump(bad))
        r = subprocess.run(["snakemake", "--cores", "1", "data/processed/cebra.h5", "--configfile", "config/smoke.yaml",
                            "config/rat.yaml"], cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
        assert r.returncode != 0
        log = (wd / "results" / "logs" / "cebra" / "fetch_dataset_achilles.jl.gz.log").read_text()
        assert "checksum mismatch" in log and "achilles.jl.gz" in log and "Traceback" not in log
        assert not (wd / "data" / "raw" / "cebra" / "download" / "achilles.jl.gz").exists()
        assert buddy.stat().st_mtime_ns == before
        assert not [p for p in buddy.parent.iterdir() if p.name.startswith(".")], "no temporary files"
    finally:
        srv.close()


def test_lowered_max_steps_ends_where_a_fresh_run_would(embedded, ccfg, tmp_path):
    """max_steps lowered after a finished run: the state past it is skipped for the periodic state
    at or before it, and the run ends exactly where a fresh run with the new value does."""
    import copy

    from neurotrain.systems.cebra.train import run_training
    from neurotrain.training.checkpoint import load_checkpoint

    ccfg["training"].update(max_steps=6, checkpoint_every=2)
    run_training(copy.deepcopy(ccfg), str(embedded / "p.h5"), str(tmp_path / "done"))
    ccfg["training"]["max_steps"] = 4
    summary = run_training(copy.deepcopy(ccfg), str(embedded / "p.h5"), str(tmp_path / "done"))
    assert summary["steps"] == 4 and summary["resumed_from_step"] == 4
    run_training(copy.deepcopy(ccfg), str(embedded / "p.h5"), str(tmp_path / "fresh"))
    a = load_checkpoint(tmp_path / "done" / "model_final.pt")["solver"]["model"]
    b = load_checkpoint(tmp_path / "fresh" / "model_final.pt")["solver"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_behaviour_columns_are_declared_not_assumed(tmp_path, ccfg):
    """A rat-layout file whose position has one column (no right/left flags) is refused with the
    rat's default three columns, naming the key, and read with the columns the config declares;
    discrete columns are scored by accuracy, continuous ones by R^2."""
    import yaml

    from conftest import NEUROTRAIN, snakemake_env
    from neurotrain.systems.cebra.analyze import decode_columns

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    joblib.dump({"spikes": rng.poisson(0.5, (300, 7)).astype(np.float32),
                 "position": np.linspace(0, 1.6, 300)[:, None].astype(np.float32)}, buf)
    body = gzip.compress(buf.getvalue())
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "achilles.jl.gz").write_bytes(body)
    block = {"data": {"source": "rat", "rat": {"names": ["achilles"],
                                               "md5": {"achilles": hashlib.md5(body).hexdigest()}}}}

    def preprocess(extra):
        cfg = copy.deepcopy(block)
        cfg["data"].update(extra)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"systems": ["cebra"], "cebra": cfg}))
        import subprocess

        return subprocess.run([NEUROTRAIN, "preprocess", "--system", "cebra", "--config", "c.yaml", "--raw",
                               "raw/achilles.jl.gz", "--out", "p.h5"], cwd=tmp_path, capture_output=True, text=True,
                              env=snakemake_env(), timeout=300)

    r = preprocess({})
    assert r.returncode == 2 and "config key cebra.data.behavior_columns: 3 columns (position, right, left), but " \
                                  "the sessions' behaviour has 1" in r.stderr
    assert not (tmp_path / "p.h5").exists()
    r = preprocess({"behavior_columns": ["position"]})
    assert r.returncode == 0, r.stderr
    d = dc.load_processed(tmp_path / "p.h5")
    assert d["behavior_names"] == ["position"] and d["behavior_discrete"] == [False]
    # a flag decoded as a class: accuracy; a position: R^2
    x = rng.normal(size=(400, 3))
    b = np.c_[x[:, 0] * 2, (x[:, 1] > 0).astype(float)]
    scores = decode_columns(x[:300], b[:300], x[300:], b[300:], [False, True], 10, metric="euclidean")
    assert 0.5 < scores[0] <= 1 and 0.8 < scores[1] <= 1


def test_nwb_spike_times_in_milliseconds_and_discrete_flags(tmp_path):
    """Spike times stored in ms (a few early ones fall inside the span in seconds) are refused as
    another time base; a 0/1 flag column is read as the last sample at each bin centre, never
    interpolated into fractions, and decoded as a class."""
    rng = np.random.default_rng(0)
    ms = [np.sort(rng.uniform(0, 20, 300)) * 1000 for _ in range(4)]
    _cebra_nwb(tmp_path / "raw" / "ms.nwb", spikes=ms)
    line = refused_line(tmp_path, _preprocess_nwb(tmp_path, ["raw/ms.nwb"]))
    assert "raw/ms.nwb:" in line and "fall outside the span of 'position'" in line and "must be in seconds" in line
    t = np.arange(0, 20, 1 / 30)
    flag = (np.sin(2 * np.pi * t / 1.3) > 0).astype(float)
    _cebra_nwb(tmp_path / "raw" / "flag.nwb", data=np.c_[_track(t), flag])
    r = _preprocess_nwb(tmp_path, ["raw/flag.nwb"], data_cfg={"behavior_columns": ["position", "running"],
                                                              "discrete_columns": ["running"]})
    assert r.returncode == 0, r.stderr
    d = dc.load_processed(tmp_path / "data" / "processed" / "cebra.h5")
    beh = d["sessions"][0]["behavior"]
    assert set(np.unique(beh[:, 1])) == {0.0, 1.0} and d["behavior_discrete"] == [False, True]
    centres = t[0] + 0.0125 + 0.025 * np.arange(len(beh))
    assert np.array_equal(beh[:, 1], flag[np.searchsorted(t, centres, side="right") - 1])


TWO_SESSIONS = {"architecture": "offset10-model", "num_units": 16, "output_dim": 3, "sharing": "per_session",
                "n_features": [5, 7]}


def _solver_steps(ccfg, mode: str, n_steps: int):
    """Losses and final parameters of ``n_steps`` solver steps on two sessions (from one seed)."""
    import cebra.data

    from neurotrain.systems.cebra.encoding import use_session_encoding
    from neurotrain.systems.cebra.train import build_models, make_loader, make_solver
    from neurotrain.training.checkpoint import seed_everything

    rng = np.random.default_rng(0)
    behaviour = torch.as_tensor(rng.uniform(0, 6.3, (300, 1)).astype(np.float32))
    data = [torch.as_tensor(rng.poisson(1.0, (300, n)).astype(np.float32)) for n in (5, 7)]
    seed_everything(3)
    models = build_models(TWO_SESSIONS)
    coll = cebra.data.DatasetCollection(*[cebra.data.TensorDataset(x, continuous=behaviour) for x in data])
    coll.configure_for(models)
    solver = make_solver(models, ccfg, tqdm_on=False)
    used = use_session_encoding(mode, solver, coll, models, ccfg["training"]["batch_size"])
    loader = make_loader(coll, n_steps, ccfg["training"])
    solver.fit(loader)
    return used, list(solver.log["total"]), [p.detach().clone() for p in models.parameters()]


def test_session_encoding_trains_what_window_encoding_trains(ccfg):
    """Encoding each session once per step reads the same embeddings as CEBRA's window by window
    step: the first step's InfoNCE is the same number, and after 5 steps the weights agree to
    float32 rounding (the gradients sum the same terms in another order)."""
    used_w, loss_w, par_w = _solver_steps(ccfg, "windows", 5)
    used_s, loss_s, par_s = _solver_steps(ccfg, "session", 5)
    assert (used_w, used_s) == (False, True)
    assert loss_s[0] == loss_w[0]
    np.testing.assert_allclose(loss_s, loss_w, rtol=1e-5)
    for a, b in zip(par_s, par_w):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # auto: 300 bins <= 6 x (3 x 64) windows -> session; a batch of 16 (288 bins at most) -> windows
    assert _solver_steps(ccfg, "auto", 1)[0]
    ccfg["training"]["batch_size"] = 16
    assert not _solver_steps(ccfg, "auto", 1)[0]


def test_session_encoding_refused_for_an_encoder_with_batch_statistics(ccfg):
    """An encoder whose output over a sequence is not its output window by window (here a batch
    norm) is refused for 'session', naming the key, and left to CEBRA's step by 'auto'."""
    import cebra.data

    from neurotrain.systems.cebra.encoding import reproduces_windows, use_session_encoding
    from neurotrain.systems.cebra.train import build_models, make_solver

    models = build_models(TWO_SESSIONS)
    assert all(reproduces_windows(m, n) for m, n in zip(models, (5, 7)))
    models[1].net.insert(1, torch.nn.BatchNorm1d(16))
    assert not reproduces_windows(models[1], 7)
    coll = cebra.data.DatasetCollection(*[cebra.data.TensorDataset(torch.randn(300, n), continuous=torch.randn(300, 1))
                                          for n in (5, 7)])
    solver = make_solver(models, ccfg, tqdm_on=False)
    with pytest.raises(NeurotrainError, match="cebra.training.batch_encoding"):
        use_session_encoding("session", solver, coll, models, 64)
    assert not use_session_encoding("auto", solver, coll, models, 64)
    assert type(solver).__name__ == "MultiSessionSolver" and type(coll) is cebra.data.DatasetCollection

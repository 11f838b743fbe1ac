"""The ring_attractor system: the network's physics, the seed's constraints, the seed's Python
API, the NWB source through a loopback download, bad config and bad input."""

import copy
import hashlib
import json
import math
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neurotrain.config import validate_system
from neurotrain.systems.ring_attractor import data as dr
from neurotrain.fetch import download
from neurotrain.errors import NeurotrainError
from neurotrain.systems.ring_attractor.network import RingAttractorNetwork
from neurotrain.systems.ring_attractor import train as sr

from _http import LoopbackServer  # noqa: I001 - tests/ helper
from conftest import refused_line, NEUROTRAIN

SMALL = {"data": {"embedded": {"n_trajectories": 12, "duration": 0.4}, "val_fraction": 0.25, "test_fraction": 0.25},
         "model": {"n_exc": 64, "n_inh": 16},
         "training": {"max_epochs": 3, "batch_size": 4, "checkpoint_every": 1, "detail_every": 2, "drift_trials": 2,
                      "drift_duration": 0.2},
         "analysis": {"drift_trials": 4, "drift_duration": 0.3, "direction_bins": 4}}


@pytest.fixture()
def rcfg():
    return validate_system("ring_attractor", copy.deepcopy(SMALL))


@pytest.fixture()
def small_data(rcfg):
    return sr._default_data(rcfg)


def _model(rcfg, **kw):
    torch.manual_seed(0)
    mc = {"dt": rcfg["data"]["embedded"]["dt"], **rcfg["model"], **kw}
    return sr.build_model(mc)


# ----------------------------------------------------------------------------- physics
def test_velocity_moves_the_bump_at_g_av_times_omega(rcfg):
    m = _model(rcfg, n_exc=200, n_inh=50, g_av=1.0, weight_spread=0.0)
    B, T = 3, 120
    light = torch.zeros(B, T)
    light[:, :10] = 1
    theta = torch.zeros(B, T)
    omega = torch.zeros(B, T)
    omega[:, 10:] = torch.tensor([1.0, -2.0, 0.0])[:, None]
    with torch.no_grad():
        r, _ = m(omega, theta, light, noise=False)
        dec, length = m.decode(r)
    un = np.unwrap(dec.numpy(), axis=1)
    speed = (un[:, -1] - un[:, 40]) / ((T - 1 - 40) * m.dt)
    assert speed == pytest.approx([1.0, -2.0, 0.0], abs=0.1)  # first-order integration is exact to ~5%
    assert (length[:, -1] > 0.5).all(), "a bump, not uniform activity"


def test_forward_without_autograd_gives_the_same_numbers(rcfg):
    """Without autograd (extraction, drift checks) the inputs are built in place, for memory:
    the rates are the ones the training-mode forward pass computes, bit for bit."""
    m = _model(rcfg, n_exc=200, n_inh=50, landmark_strength=0.7, landmark_kappa=3.3)
    g = torch.Generator().manual_seed(3)
    B, T = 4, 30
    omega, theta = torch.randn(B, T, generator=g), torch.rand(B, T, generator=g) * 6 - 3
    light = torch.rand(B, T, generator=g)  # dimmed landmark: every product's rounding shows
    with_grad, _ = m(omega, theta, light, generator=torch.Generator().manual_seed(1))
    assert with_grad.requires_grad
    with torch.no_grad():
        without, _ = m(omega, theta, light, generator=torch.Generator().manual_seed(1))
    assert torch.equal(with_grad.detach(), without)


def test_handwritten_backward_matches_autograd():
    """The recurrence's backward pass (weight gradient as one product) is exact: gradcheck in
    double precision, and the same gradients as a plain autograd loop in float32."""
    from neurotrain.systems.ring_attractor.network import _Recurrence

    torch.manual_seed(0)
    N, ne, T, B = 7, 5, 6, 3
    M = (0.5 * torch.randn(N, N + ne, dtype=torch.double)).requires_grad_()
    ext = torch.randn(T, N, B, dtype=torch.double, requires_grad=True)
    u0 = torch.randn(B, N, dtype=torch.double, requires_grad=True)
    omega = torch.randn(T, B, dtype=torch.double)
    alpha = torch.tensor([0.5] * ne + [1.0] * (N - ne), dtype=torch.double)
    assert torch.autograd.gradcheck(lambda M, e, u: _Recurrence.apply(M, e, omega, u, alpha, ne), (M, ext, u0))

    def reference(M, ext, u):
        out = []
        r = torch.tanh(u).clamp_min(0)
        for t in range(T):
            h = r @ M
            drive = h[:, :N] + ext[t].t() + torch.nn.functional.pad(omega[t, :, None] * h[:, N:], (0, N - ne))
            u = u + alpha * (drive - u)
            r = torch.tanh(u).clamp_min(0)
            out.append(r)
        return torch.stack(out, 0).permute(2, 0, 1), u  # [N, T, B] like the Function

    w = torch.randn(N, T, B, dtype=torch.double)
    got = torch.autograd.grad((_Recurrence.apply(M, ext, omega, u0, alpha, ne)[0] * w).sum(), (M, ext, u0))
    want = torch.autograd.grad((reference(M, ext, u0)[0] * w).sum(), (M, ext, u0))
    for g, h in zip(got, want):
        assert torch.allclose(g, h, atol=1e-10)


def test_homogeneous_ring_holds_its_bump_without_input(rcfg):
    m = _model(rcfg, n_exc=120, n_inh=30, weight_spread=0.0)
    start = torch.tensor([-2.0, 0.5, 2.5])
    T = 100
    light = torch.zeros(3, T)
    light[:, :10] = 1
    with torch.no_grad():
        r, _ = m(torch.zeros(3, T), start[:, None].expand(3, T), light, noise=False)
        dec, _ = m.decode(r)
    assert torch.allclose(dec[:, -1], start, atol=0.02)


def test_constraints_hold_after_every_optimizer_step(rcfg, small_data):
    rcfg["training"]["learning_rate"] = 5.0  # absurd steps push every parameter out of range
    task = sr.RingTask(small_data, rcfg, torch.device("cpu"), model=_model(rcfg))
    opt = torch.optim.Adam(task.model.parameters(), lr=5.0)
    seen = []

    def step():
        for p in task.model.parameters():  # gradient ascent and descent alike: random signs
            p.grad = torch.randn_like(p) * 100
        opt.step()
        task.after_step()
        seen.append(task.model.constraint_violations())

    task.train_epoch(np.random.default_rng(0), step)
    assert seen and all(sum(v.values()) == 0 for v in seen), seen
    m = task.model
    assert 0.1 <= m.ring_parameters()["g_ee"] <= 10 and 0.1 <= m.ring_parameters()["noise_rate_i"] <= 20
    w_ie, w_ei = m.W_IE.detach(), m.W_EI.detach()
    assert float(w_ie.max()) <= 0.5 and -0.5 <= float(w_ei.min()) and float(w_ei.max()) <= 2.0
    # and without the projection they would have been out of range
    with torch.no_grad():
        m.g_ie.fill_(50.0)
        m.W_IE.fill_(3.0)
    assert m.constraint_violations()["g_ie"] == 1 and m.constraint_violations()["W_IE"] == m.W_IE.numel()


# ----------------------------------------------------------------------------- the seed's API
def test_train_model_enhanced_and_quick_train(rcfg, small_data, tmp_path):
    model = _model(rcfg)
    trained, history, trainer = sr.train_model_enhanced(model, data=small_data, learning_rate=1e-3, max_epochs=3,
                                                        early_stopping=True, save_dir=str(tmp_path / "run"))
    assert trained is model and len(history["val_loss"]) == 3
    assert {"train_loss", "val_loss", "learning_rate", "grad_norm", "val_tracking_error_deg"} <= set(history)
    ph = trainer.param_history
    assert set(ph) == {"g_ee", "g_ei", "g_ie", "g_av", "noise_rate_e", "noise_rate_i"} and len(ph["g_ee"]) == 3
    lr = history["learning_rate"]
    assert lr[0] == pytest.approx(1e-3) and lr[0] > lr[1] > lr[2]  # cosine annealing
    assert (tmp_path / "run" / "model_best.pt").is_file()

    m2, h2 = sr.quick_train(_model(rcfg), epochs=2, lr=2e-3, data=small_data)
    assert len(h2["val_loss"]) == 2 and h2["learning_rate"][0] == pytest.approx(2e-3)

    with pytest.raises(ValueError, match="unknown training option"):
        sr.create_training_config(learning_rat=1e-3)
    with pytest.raises(ValueError, match="unknown preset"):
        sr.train_model_enhanced(_model(rcfg), data=small_data, preset="reckless")


def test_constructor_defaults_are_the_config_defaults(rcfg):
    import inspect

    d = sr.create_training_config()
    sig = inspect.signature(RingAttractorNetwork).parameters
    for k in sr.MODEL_KEYS:
        assert sig[k].default == d["model"][k], k
    assert sig["dt"].default == d["data"]["embedded"]["dt"]


def test_presets_are_the_seeds(root):
    import yaml

    for name, preset in sr.PRESETS.items():
        cfg = yaml.safe_load((root / "config" / f"ring_attractor_{name}.yaml").read_text())
        assert cfg["ring_attractor"]["training"] == preset
    assert sr.PRESETS["conservative"] == {"learning_rate": 5e-4, "max_epochs": 200, "weight_decay": 1e-3,
                                          "patience": 30, "batch_size": 16}
    assert sr.PRESETS["aggressive"] == {"learning_rate": 2e-3, "max_epochs": 50, "weight_decay": 1e-5,
                                        "patience": 10, "batch_size": 64}
    d = sr.create_training_config()["training"]
    assert {k: d[k] for k in sr.SEED_DEFAULTS} == sr.SEED_DEFAULTS


def test_trainer_checkpoint_round_trip_and_corrupt_checkpoint(rcfg, small_data, tmp_path):
    cfg = sr.create_training_config(max_epochs=2, batch_size=4, save_dir=str(tmp_path / "a"))
    cfg.update({k: rcfg[k] for k in ("data", "model")})
    t1 = sr.AdamCosineTrainer(_model(rcfg), cfg, data=small_data)
    t1.train()
    t1.save_checkpoint(2, tmp_path / "ck.pth")
    with pytest.raises(ValueError, match="epoch 2"):
        t1.save_checkpoint(5, tmp_path / "other.pth")
    cfg_b = dict(cfg, save_dir=str(tmp_path / "b"))
    t2 = sr.AdamCosineTrainer(_model(rcfg), cfg_b, data=small_data)
    assert t2.load_checkpoint(tmp_path / "ck.pth") == 2
    for k, v in t1._trainer.model.state_dict().items():
        assert torch.equal(v, t2._trainer.model.state_dict()[k]), k
    assert t2.param_history["g_ee"] == t1.param_history["g_ee"]
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(NeurotrainError, match="corrupt or unreadable checkpoint") as exc:
        t2.load_checkpoint(bad)
    assert str(bad) in str(exc.value)


# ----------------------------------------------------------------------------- data
def test_embedded_trajectories_integrate_velocity(rcfg, tmp_path):
    dr.generate_embedded(rcfg, tmp_path / "raw")
    dr.preprocess_raw(rcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    d = dr.load_processed(tmp_path / "p.h5")
    n, T = d["omega"].shape
    assert d["theta"].shape == d["light"].shape == (n, T) and n == 12
    step = np.angle(np.exp(1j * np.diff(d["theta"], axis=1)))
    assert np.allclose(step, d["omega"][:, 1:] * d["dt"], atol=1e-4)
    assert (d["light"][:, 0] == 1).all() and (d["light"] == 0).any()
    assert sorted(np.unique(d["split"])) == [0, 1, 2]


def _hd_nwb(path: Path, seconds=8.0, degrees=False, name="head_direction", nan_all=False):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import CompassDirection

    nwb = NWBFile(session_description="hd", identifier="hd1", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    t = np.arange(0, seconds, 1 / 50)
    angle = np.cumsum(np.random.default_rng(0).normal(0, 0.05, len(t)))
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    if nan_all:
        angle[:] = np.nan
    cd = CompassDirection(name="CompassDirection")
    cd.create_spatial_series(name=name, data=np.rad2deg(angle) if degrees else angle, timestamps=t,
                             reference_frame="arena")
    nwb.create_processing_module("behavior", "behaviour").add(cd)
    with NWBHDF5IO(str(path), "w") as io_:
        io_.write(nwb)
    return t, angle


def test_nwb_download_from_loopback_and_preprocess(rcfg, tmp_path):
    src = tmp_path / "served.nwb"
    t, angle = _hd_nwb(src, degrees=True)
    body = src.read_bytes()
    srv = LoopbackServer({"hd.nwb": body}, fail_first=1)
    try:
        got = download(f"{srv.url}/hd.nwb", tmp_path / "dl" / "hd.nwb", hashlib.md5(body).hexdigest(), retries=3,
                       backoff=0)
    finally:
        srv.close()
    cfg = copy.deepcopy(rcfg)
    cfg["data"].update(source="nwb")
    cfg["data"]["nwb"].update(degrees=True, md5=hashlib.md5(body).hexdigest(), velocity_window=0.0)
    cfg["data"]["embedded"].update(duration=1.0)
    dr.preprocess_raw(cfg, [got], tmp_path / "p.h5")
    d = dr.load_processed(tmp_path / "p.h5")
    assert d["omega"].shape[1] == 50 and len(d["omega"]) >= 6  # 8 s: 8 trajectories, 2 left out as gaps
    # the first segment follows the recorded direction
    grid = t[0] + np.arange(50) * 0.02
    ref = np.interp(grid, t, np.unwrap(angle))
    assert np.allclose(np.angle(np.exp(1j * (d["theta"][0] - ref))), 0, atol=1e-3)
    cfg["data"]["nwb"]["md5"] = "0" * 32
    with pytest.raises(NeurotrainError, match="checksum"):
        dr.preprocess_raw(cfg, [got], tmp_path / "q.h5")
    assert not (tmp_path / "q.h5").exists()


@pytest.mark.parametrize("case,needle", [
    ("missing", "file not found"),
    ("corrupt", "cannot read NWB file"),
    ("wrong_name", "no time series named 'head_direction'"),
    ("all_nan", "no finite samples"),
    ("too_short", "gap-free trajectories"),
])
def test_bad_nwb_named(rcfg, tmp_path, case, needle):
    f = tmp_path / "x.nwb"
    if case == "corrupt":
        f.write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    elif case == "wrong_name":
        _hd_nwb(f, name="heading")
    elif case == "all_nan":
        _hd_nwb(f, nan_all=True)
    elif case == "too_short":
        _hd_nwb(f, seconds=0.6)
    cfg = copy.deepcopy(rcfg)
    cfg["data"]["source"] = "nwb"
    cfg["data"]["embedded"]["duration"] = 0.4
    with pytest.raises(NeurotrainError, match=needle) as exc:
        dr.preprocess_raw(cfg, [f], tmp_path / "p.h5")
    assert str(f) in str(exc.value)
    assert not (tmp_path / "p.h5").exists()


def test_tracked_angle_smoothed_and_recording_split_in_time_blocks(rcfg, tmp_path):
    """Tracking at 40 Hz with 3 degrees of jitter: the angular velocity is the Savitzky-Golay
    derivative, far closer to the truth than the raw angle's; the trajectories of the one
    recording are split in time blocks, a trajectory's gap between them, no sample shared."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import CompassDirection

    rng = np.random.default_rng(0)
    t = np.arange(0, 60, 1 / 40)
    true = _heading(t)
    tracked = true + np.deg2rad(3) * rng.normal(size=len(t))
    nwb = NWBFile(session_description="hd", identifier="hd2", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    cd = CompassDirection(name="CompassDirection")
    cd.create_spatial_series(name="head_direction", data=(tracked + np.pi) % (2 * np.pi) - np.pi, timestamps=t,
                             reference_frame="arena", unit="radians")
    nwb.create_processing_module("behavior", "behaviour").add(cd)
    with NWBHDF5IO(str(tmp_path / "hd.nwb"), "w") as io_:
        io_.write(nwb)
    cfg = copy.deepcopy(rcfg)
    cfg["data"]["source"] = "nwb"
    cfg["data"]["embedded"]["duration"] = 1.0
    errors = {}
    for window in (0.0, 0.2):
        cfg["data"]["nwb"]["velocity_window"] = window
        dr.preprocess_raw(cfg, [tmp_path / "hd.nwb"], tmp_path / f"p{window}.h5")
        d = dr.load_processed(tmp_path / f"p{window}.h5")
        n, T = d["omega"].shape
        grid = np.arange(0, 60, 0.01)[:60 * T].reshape(60, T)  # the recording's trajectories, gaps included
        err = []
        for theta, omega in zip(d["theta"], d["omega"]):  # each kept trajectory: its place in time by its angle
            k = np.argmin([np.abs(np.angle(np.exp(1j * (theta - _heading(g))))).mean() for g in grid])
            err.append(omega - (1.5 * 0.8 * np.cos(0.8 * grid[k]) + 0.6))  # d/dt of _heading
        errors[window] = np.sqrt(np.mean(np.square(err)))
    assert errors[0.2] < errors[0.0] / 3, errors
    assert np.rad2deg(errors[0.2]) < 30
    # 59 whole trajectories of 1 s: train, a gap, validation, a gap, test (the latest)
    order = d["split"]
    assert n == 57 and list(order) == sorted(order) and sorted(set(order)) == [0, 1, 2]


# NWB as the field writes it: declared units (conversion, offset), a time base given by rate and
# starting_time, timestamps with dropped frames or stored out of order. Built here with pynwb
# and preprocessed through the command line the workflow runs (relative paths, as Snakemake does).
def _heading(t):
    """The true head direction (rad, unwrapped) at time t (s)."""
    t = np.asarray(t, float)
    return 1.5 * np.sin(0.8 * t) + 0.6 * t


def _hd_file(path: Path, data, *, timestamps=None, rate=None, starting_time=0.0, unit="radians", conversion=1.0,
             offset=0.0, name="head_direction"):
    """A CompassDirection SpatialSeries ``name`` holding ``data`` as stored, with the declared
    ``unit``, ``conversion``, ``offset`` and either ``timestamps`` or ``rate``/``starting_time``."""
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.behavior import CompassDirection

    nwb = NWBFile(session_description="hd", identifier="hd", session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc))
    timing = {"timestamps": timestamps} if timestamps is not None else {"rate": rate, "starting_time": starting_time}
    cd = CompassDirection(name="CompassDirection")
    cd.create_spatial_series(name=name, data=data, reference_frame="arena north", unit=unit, conversion=conversion,
                             offset=offset, **timing)
    nwb.create_processing_module("behavior", "behaviour").add(cd)
    path.parent.mkdir(parents=True, exist_ok=True)
    with NWBHDF5IO(str(path), "w") as io_:
        io_.write(nwb)


def _preprocess_hd(tmp_path: Path, degrees=False, **nwb_cfg):
    """``neurotrain preprocess`` of raw/hd.nwb (relative to ``tmp_path``, the working directory)
    with 1 s trajectories, as the workflow's rule runs it; the output is data/processed/ring_attractor.h5."""
    import yaml

    block = copy.deepcopy(SMALL)
    # no smoothing: the values are compared with the exact heading (smoothing has its own test)
    nwb = {"path": "raw/hd.nwb", "degrees": degrees, "velocity_window": 0.0, **nwb_cfg}
    block["data"].update(source="nwb", nwb=nwb)
    block["data"]["embedded"]["duration"] = 1.0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"systems": ["ring_attractor"], "ring_attractor": block}))
    return subprocess.run([NEUROTRAIN, "preprocess", "--system", "ring_attractor", "--config", "config.yaml", "--raw",
                           "raw/hd.nwb", "--out", "data/processed/ring_attractor.h5"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def _segments_follow_the_truth(tmp_path: Path, t0: float, t1: float) -> int:
    """Every processed trajectory is the true heading (and its angular velocity) over some
    1 s stretch of the 0.02 s grid from t0; returns how many trajectories there are."""
    d = dr.load_processed(tmp_path / "data" / "processed" / "ring_attractor.h5")
    grid = np.arange(t0, t1 + 1e-9, 0.02)  # the last sample included
    truth, omega = _heading(grid), np.gradient(_heading(grid), 0.02)
    for theta, w in zip(d["theta"], d["omega"]):
        errs = [np.abs(np.angle(np.exp(1j * (theta - truth[k:k + 50])))).max() for k in range(len(grid) - 49)]
        k = int(np.argmin(errs))
        assert errs[k] < 2e-3, f"a trajectory matches no stretch of the true heading (best error {errs[k]:.3g} rad)"
        assert np.allclose(w[1:-1], omega[k + 1:k + 49], atol=0.02), "angular velocity is not the true one"
    return len(d["theta"])


@pytest.mark.parametrize("encoding", ["centidegrees", "offset_degrees_rate"])
def test_nwb_heading_read_in_declared_units(tmp_path, encoding):
    """int32 centi-degrees declared in radians (conversion pi/18000), or float degrees minus 180
    with offset 180 on a rate/starting_time time base: both read as the true heading and angular
    velocity (not 57 times it, not half a turn away)."""
    t = np.arange(1000) * 0.02
    deg = np.rad2deg(np.mod(_heading(t), 2 * np.pi))
    if encoding == "centidegrees":
        _hd_file(tmp_path / "raw" / "hd.nwb", np.round(deg * 100).astype(np.int32), timestamps=t,
                 conversion=np.pi / 18000)
        r = _preprocess_hd(tmp_path)
        t0 = 0.0
    else:
        t0 = 5.0
        t = t + t0
        deg = np.rad2deg(np.mod(_heading(t), 2 * np.pi))
        _hd_file(tmp_path / "raw" / "hd.nwb", deg - 180.0, rate=50.0, starting_time=t0, unit="degrees", offset=180.0)
        r = _preprocess_hd(tmp_path, degrees=True)
    assert r.returncode == 0, r.stderr
    assert _segments_follow_the_truth(tmp_path, t0, t[-1]) == 18  # 20, two left out as gaps


@pytest.mark.parametrize("unit,degrees,line", [
    ("degrees", False, "error: raw/hd.nwb: head_direction: declared unit 'degrees' contradicts config key "
                       "ring_attractor.data.nwb.degrees (false: radians)"),
    ("rad", True, "error: raw/hd.nwb: head_direction: declared unit 'rad' contradicts config key "
                  "ring_attractor.data.nwb.degrees (true: degrees)"),
    ("cm", False, "error: raw/hd.nwb: head_direction: declared unit 'cm' is not an angle (radians or degrees, "
                  "config key ring_attractor.data.nwb.degrees)"),
])
def test_nwb_unit_contradicting_the_config_refused(tmp_path, unit, degrees, line):
    t = np.arange(1000) * 0.02
    _hd_file(tmp_path / "raw" / "hd.nwb", np.mod(_heading(t), 2 * np.pi), timestamps=t, unit=unit)
    assert refused_line(tmp_path, _preprocess_hd(tmp_path, degrees=degrees)) == line


@pytest.mark.parametrize("unit", ["n/a", "radians"])
def test_degrees_read_as_radians_refused_whatever_the_label(tmp_path, unit):
    """Degrees wrapped at 360 and labelled 'n/a' (no unit) or even 'radians', with the config at
    radians: refused, naming the key, instead of training on 57 times the true velocity."""
    t = np.arange(1000) * 0.02
    _hd_file(tmp_path / "raw" / "hd.nwb", np.rad2deg(np.mod(_heading(t), 2 * np.pi)), timestamps=t, unit=unit)
    line = refused_line(tmp_path, _preprocess_hd(tmp_path))
    assert line.startswith("error: raw/hd.nwb: head_direction: read as radians, the angle jumps by ")
    assert line.endswith("the values look like degrees; set config key ring_attractor.data.nwb.degrees: true "
                         "(or declare unit='degrees' in the file)")


def test_slow_unwrapped_degrees_refused_and_radians_at_1khz_with_jitter_accepted(tmp_path):
    """Unwrapped degrees never jump a turn, but read as radians the head turns implausibly fast;
    a true radian heading tracked at 1 kHz with 2 degrees of jitter is not mistaken for that."""
    t = np.arange(1000) * 0.02
    _hd_file(tmp_path / "raw" / "hd.nwb", np.rad2deg(_heading(t)), timestamps=t, unit="n/a")
    line = refused_line(tmp_path, _preprocess_hd(tmp_path))
    assert "would turn at" in line and "deg/s or faster for a tenth of the recording" in line
    t = np.arange(20000) * 0.001
    jitter = np.deg2rad(2.0) * np.random.default_rng(0).standard_normal(len(t))
    _hd_file(tmp_path / "raw" / "hd.nwb", _heading(t) + jitter, timestamps=t)
    r = _preprocess_hd(tmp_path)
    assert r.returncode == 0, r.stderr


def test_raw_given_on_the_command_line_says_it_replaces_the_config_path(tmp_path):
    t = np.arange(1000) * 0.02
    _hd_file(tmp_path / "raw" / "hd.nwb", np.mod(_heading(t), 2 * np.pi), timestamps=t)
    r = _preprocess_hd(tmp_path)
    assert r.returncode == 0 and "not config key" not in r.stderr, r.stderr
    r = _preprocess_hd(tmp_path, path="raw/session2.nwb")
    assert r.returncode == 0, r.stderr
    assert ("reading the --raw file(s) raw/hd.nwb, not config key ring_attractor.data.nwb.path (raw/session2.nwb)"
            in r.stderr)


def test_millisecond_timestamps_get_a_hint(tmp_path):
    """Timestamps in ms (NWB wants seconds): every sample falls apart into its own stretch; the
    refusal says why instead of a bare '0 gap-free trajectories'."""
    t = np.arange(1000) * 20.0
    _hd_file(tmp_path / "raw" / "hd.nwb", np.mod(_heading(t / 1000), 2 * np.pi), timestamps=t)
    line = refused_line(tmp_path, _preprocess_hd(tmp_path))
    assert line == ("error: raw/hd.nwb: recording yields 0 gap-free trajectories of 1.0 s; need at least 5 (train, "
                    "validation and test blocks with a trajectory's gap between them); its median sample interval, "
                    "20 s, is longer than config key ring_attractor.data.nwb.max_gap (0.5 s): NWB timestamps are in "
                    "seconds, are these in milliseconds?")


def test_nwb_nan_timestamps_are_gaps(tmp_path):
    """Dropped frames left as NaN timestamps (their stored angles garbage): two single frames,
    the last frame, and a run of 40 frames (0.8 s, longer than max_gap 0.5 s). The samples are
    dropped and the log says so; no trajectory spans the long gap, and every trajectory is the
    true heading."""
    t = np.arange(1000) * 0.02
    angle = np.mod(_heading(t), 2 * np.pi)
    nan = np.r_[100, 333, 500:540, 999]
    t[nan], angle[nan] = np.nan, 0.0
    _hd_file(tmp_path / "raw" / "hd.nwb", angle, timestamps=t)
    r = _preprocess_hd(tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"raw/hd.nwb: head_direction: {len(nan)} sample(s) with NaN timestamps dropped" in r.stderr
    # 0-10 s and 10.8-19.96 s: 10 + 9 gap-free trajectories of 1 s
    assert _segments_follow_the_truth(tmp_path, 0.0, 19.96) == 17  # 19, two left out as gaps


def test_nwb_unsorted_timestamps_and_missing_series_refused(tmp_path):
    """Frames of 8-12 s stored before those of 4-8 s: refused, naming the file and the series;
    a series name that is not in the file: refused, listing the names that are."""
    t = np.arange(1000) * 0.02
    t = np.r_[t[:200], t[400:600], t[200:400], t[600:]]
    _hd_file(tmp_path / "raw" / "hd.nwb", np.mod(_heading(t), 2 * np.pi), timestamps=t)
    line = refused_line(tmp_path, _preprocess_hd(tmp_path))
    assert line.startswith("error: raw/hd.nwb: head_direction: timestamps are not increasing: sample 400 at 4 s "
                           "follows sample 399 at 11.98 s"), line
    line = refused_line(tmp_path, _preprocess_hd(tmp_path, series="heading"))
    assert line == ("error: raw/hd.nwb: no time series named 'heading' (config key ring_attractor.data.nwb.series); "
                    "the file has these time series: 'head_direction'")


# ----------------------------------------------------------------------------- bad config, NaN
@pytest.mark.parametrize("key,value,needle", [
    ("n_exc", -5, "ring_attractor.model.n_exc"),
    ("n_inh", 0, "ring_attractor.model.n_inh"),
    ("sigma_ee", 0.0, "ring_attractor.model.sigma_ee"),
    ("sigma_ee", -0.3, "ring_attractor.model.sigma_ee"),
    ("g_ee", 20.0, "ring_attractor.model.g_ee"),
])
def test_out_of_range_model_config_named(tmp_path, key, value, needle):
    params = json.dumps({"model": {key: value}})
    r = subprocess.run([NEUROTRAIN, "train", "--system", "ring_attractor", "--params", params, "--data", "none.h5",
                        "--out-dir", "model"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("kw", [{"n_exc": -5}, {"n_inh": 0}, {"sigma_ee": 0.0}, {"dt": 0.0}])
def test_model_constructor_refuses_bad_sizes(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        RingAttractorNetwork(**{"n_exc": 8, "n_inh": 2, **kw})


def test_nan_loss_stops_with_a_clear_error_and_no_model(rcfg, tmp_path):
    dr.generate_embedded(rcfg, tmp_path / "raw")
    dr.preprocess_raw(rcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    params = copy.deepcopy(SMALL)
    params["model"]["tonic_e"] = 1e39  # overflows float32: inf drive, NaN rates, NaN loss
    out = tmp_path / "model"
    r = subprocess.run([NEUROTRAIN, "train", "--system", "ring_attractor", "--params", json.dumps(params), "--data",
                        "p.h5", "--out-dir", "model"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 3 and "diverged" in r.stderr, r.stderr
    assert not (out / "model_best.pt").exists() and not (out / "model_final.pt").exists()


def test_corrupt_resume_checkpoint_falls_back_and_says_so(rcfg, tmp_path, caplog):
    dr.generate_embedded(rcfg, tmp_path / "raw")
    dr.preprocess_raw(rcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"\x00garbage")
    sr.run_training(rcfg, str(tmp_path / "p.h5"), str(out))
    assert "last.pt" in caplog.text and "corrupt or unreadable checkpoint" in caplog.text
    assert (out / "model_best.pt").is_file()


def test_stage_chain_in_process(rcfg, tmp_path):
    """train -> extract -> analyze -> figures on the small config: shapes of the artifacts."""
    from neurotrain.systems.ring_attractor.analyze import analyze
    from neurotrain.systems.ring_attractor.extract import extract
    from neurotrain.systems.ring_attractor.figures import FIGURES, render

    dr.generate_embedded(rcfg, tmp_path / "raw")
    dr.preprocess_raw(rcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    run = tmp_path / "run"
    sr.run_training(rcfg, str(tmp_path / "p.h5"), str(run / "model"))
    extract(rcfg, str(run / "model"), str(tmp_path / "p.h5"), str(run))
    analyze(rcfg, str(run), str(tmp_path / "p.h5"), None)
    render(rcfg, str(run))
    N, E, I = 80, 64, 16
    T = 20
    n_test = 3
    shapes = {"weights/connectivity.npy": (N, N), "weights/W_EI.npy": (I, E), "weights/W_IE.npy": (E, I),
              "weights/W_EE.npy": (E, E), "outputs/test_rates.npy": (n_test, T, N),
              "outputs/test_decoded.npy": (n_test, T), "outputs/drift_decoded.npy": (4, 10 + 15),
              "metrics/tracking_error_deg.npy": (n_test, T), "metrics/fano.npy": (N,),
              "population/pca.npy": (n_test, T, 3)}
    for rel, shape in shapes.items():
        assert np.load(run / rel).shape == shape, rel
    m = json.loads((run / "metrics.json").read_text())
    assert m["constraint_violations"] == 0 and math.isfinite(m["tracking_error_median_deg"])
    for f in FIGURES:
        assert (run / "figures" / f"{f}.png").read_bytes()[:4] == b"\x89PNG"
    log = json.loads((run / "model" / "training_log.json").read_text())
    assert all("g_ee" in row and "grad_norm" in row for row in log["history"])
    with h5py.File(tmp_path / "p.h5") as h:
        assert h["omega"].dtype == np.float32


def test_code_change_does_not_resume_from_a_finished_runs_checkpoints(rcfg, tmp_path, monkeypatch, caplog):
    """Snakemake reruns training after a code change; the periodic checkpoints of the finished
    run must not be taken as an interrupted run of the new code."""
    from neurotrain.training import runstate

    dr.generate_embedded(rcfg, tmp_path / "raw")
    dr.preprocess_raw(rcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    out = tmp_path / "model"
    sr.run_training(rcfg, str(tmp_path / "p.h5"), str(out))
    assert (out / "checkpoints" / "model_epoch3.pt").is_file()
    again = sr.run_training(rcfg, str(tmp_path / "p.h5"), str(out))  # same code: nothing left to train
    assert again["resumed_from_epoch"] == 3
    monkeypatch.setattr(runstate, "_CODE_SHA", "a-different-version-of-the-code")
    summary = sr.run_training(rcfg, str(tmp_path / "p.h5"), str(out))
    assert summary["resumed_from_epoch"] is None and summary["total_epochs"] == 3
    assert "Not resuming" in caplog.text


def test_batch_of_one_leaves_the_callers_state_alone(rcfg):
    m = _model(rcfg)
    state = torch.zeros(1, m.n_exc + m.n_inh)
    m(torch.zeros(1, 5), torch.zeros(1, 5), torch.ones(1, 5), noise=False, state=state)
    assert (state == 0).all()


def test_cosine_horizon_is_part_of_the_resume_fingerprint(rcfg, small_data, tmp_path):
    """Under cosine annealing max_epochs sets the schedule, so a run is not resumed under
    another max_epochs (under ReduceLROnPlateau it may be)."""
    from neurotrain.training.torch_loop import Trainer

    fps = []
    for epochs in (3, 5):
        cfg = copy.deepcopy(rcfg)
        cfg["training"]["max_epochs"] = epochs
        task = sr.RingTask(small_data, cfg, torch.device("cpu"), model=_model(rcfg))
        fps.append(Trainer(task, sr.loop_config(cfg["training"]), tmp_path, {"training": cfg["training"]}, "d").fp)
    assert fps[0] != fps[1]

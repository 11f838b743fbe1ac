"""The lisbet system: the four self-supervised tasks, the model and its exported embedder,
CalMS21 through a loopback download with safe extraction, movement pose files, bad input."""

import copy
import hashlib
import io
import json
import os
import signal
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neurotrain.config import validate_system
from neurotrain.systems.lisbet import data as dl
from neurotrain.errors import NeurotrainError
from neurotrain.systems.lisbet.network import Embedder, LisbetModel, TorchReference
from neurotrain.systems.lisbet import train as sl

from _http import LoopbackServer  # noqa: I001 - tests/ helper

SMALL = {"data": {"embedded": {"n_sequences": 8, "duration": 4.0}},
         "model": {"emb_dim": 8, "num_layers": 1, "num_heads": 2, "hidden_dim": 16, "window": 12},
         "training": {"epochs": 2, "batch_size": 16, "train_sample": 0.2, "val_examples": 32, "checkpoint_every": 1,
                      "delay_min": 2, "delay_max": 4}}


@pytest.fixture()
def lcfg():
    return validate_system("lisbet", copy.deepcopy(SMALL))


def _coded_keypoints(n_seq=4, T=200):
    """Sequences [T, 2, 7, 2] whose values encode (sequence, time, mouse): x = 1000 s + t, y = mouse."""
    kps = []
    for s in range(n_seq):
        k = np.zeros((T, 2, 7, 2), np.float32)
        k[..., 0] = (1000 * s + np.arange(T))[:, None, None]
        k[:, 1, :, 1] = 1
        kps.append(k)
    return kps


def _coded_frames(n_seq=4, T=200):
    return sl.Frames(_coded_keypoints(n_seq, T))


def _decode(x):
    """(sequence, time) of resident and intruder per frame of windows [n, W, 28]."""
    f = x.reshape(len(x), x.shape[1], 2, 7, 2)
    return (f[:, :, 0, 0, 0] // 1000, f[:, :, 0, 0, 0] % 1000, f[:, :, 1, 0, 0] // 1000, f[:, :, 1, 0, 0] % 1000)


@pytest.mark.parametrize("task", ["nwp", "smp", "dmp", "vsp"])
def test_task_examples_follow_their_definitions(task, lcfg):
    frames = _coded_frames()
    t = lcfg["training"]
    W = 20
    x, y = sl.make_examples(task, frames, np.arange(4), 400, np.random.default_rng(0), t, W)
    assert x.shape == (400, W, 28) and set(np.unique(y)) == {0.0, 1.0}
    rs, rt, is_, it = _decode(x)
    pos, neg = y == 1, y == 0
    if task == "nwp":
        steps = np.diff(rt, axis=1)
        assert (steps[pos] == 1).all(), "true continuation: consecutive frames"
        assert ((steps[neg] != 1).sum(1) == 1).all(), "one splice per negative window"
        assert (rs == is_).all() and (rt == it).all()
    elif task == "smp":
        assert (is_[pos] == rs[pos]).all() and (it[pos] == rt[pos]).all()
        assert (is_[neg] != rs[neg]).all(), "swapped in from another recording"
    elif task == "dmp":
        lag = (rt - it)[:, W // 2]
        inside = (rt.min(1) >= t["delay_max"]) & (rt.max(1) < 200 - t["delay_max"])
        assert inside.all(), "no window needs frames beyond the recording (no frozen intruder)"
        assert (lag[pos & inside] >= t["delay_min"]).all() and (lag[pos & inside] <= t["delay_max"]).all()
        assert (-lag[neg & inside] >= t["delay_min"]).all() and (-lag[neg & inside] <= t["delay_max"]).all()
    else:
        speed = (rt[:, -1] - rt[:, 0]) / (W - 1)
        assert (speed[pos] > 1.3).all() and (speed[neg] < 0.75).all()
        assert (np.diff(rt, axis=1) > 0).all(), "slowed windows interpolate, never repeat a frame"
        assert (rt == it).all()


@pytest.mark.parametrize("task", ["nwp", "smp", "dmp", "vsp"])
def test_no_frame_of_another_split_in_any_example(task, lcfg):
    """Splits are whole sequences: training examples (swapped-in intruders included) hold only
    frames of training sequences, validation examples only frames of validation sequences."""
    frames = _coded_frames(n_seq=6)
    for seqs in (np.array([0, 2, 3]), np.array([1, 5])):
        x, _ = sl.make_examples(task, frames, seqs, 300, np.random.default_rng(1), lcfg["training"], 20)
        rs, _, is_, _ = _decode(x)
        assert set(np.unique(rs)) | set(np.unique(is_)) <= set(seqs.tolist())


def test_training_and_validation_draw_from_their_own_sequences(lcfg, monkeypatch):
    """What LisbetTask feeds the model: every training window comes from a split-0 sequence,
    every validation window from a split-1 sequence; test sequences are never read."""
    kps = _coded_keypoints(n_seq=6)
    split = np.array([0, 1, 2, 0, 2, 0], np.int8)
    seen = []
    real = sl.make_examples

    def recording(task, frames, seqs, *a, **k):
        x, y = real(task, frames, seqs, *a, **k)
        rs, _, is_, _ = _decode(x)
        seen.append(set(np.unique(rs)) | set(np.unique(is_)))
        return x, y

    monkeypatch.setattr(sl, "make_examples", recording)
    task = sl.LisbetTask({"keypoints": kps, "split": split}, lcfg, torch.device("cpu"))
    assert len(seen) == len(task.task_ids) and all(s <= {1} for s in seen), seen
    seen.clear()
    task.train_epoch(np.random.default_rng(0), lambda: None)
    assert len(seen) == len(task.task_ids) and all(s <= {0, 3, 5} for s in seen), seen


def test_encoder_equals_torch_prenorm_transformer():
    """The encoder (SDPA attention, the last layer computed for the last frame only) gives what
    ``nn.TransformerEncoder`` of pre-norm GELU layers gives with the same weights, at the last
    frame, and its parameter names are that module's."""
    torch.manual_seed(0)
    mc = {"emb_dim": 16, "num_heads": 4, "hidden_dim": 32, "num_layers": 3, "window": 11, "in_dim": 28}
    emb = Embedder(mc).eval()
    ref = TorchReference(emb.backbone.encoder)
    assert isinstance(ref.stack, torch.nn.TransformerEncoder) and ref.stack.layers[0].norm_first
    assert set(ref.stack.state_dict()) == set(emb.backbone.encoder.state_dict())
    x = torch.randn(5, 11, 16)
    for train in (False, True):  # torch's inference fast path and its training path
        ref.train(train)
        with torch.no_grad():
            assert torch.allclose(emb.backbone.encoder(x), ref(x), atol=1e-5)
    x.requires_grad_(True)
    emb.backbone.encoder(x).square().sum().backward()
    g = x.grad.clone()
    x.grad = None
    ref(x).square().sum().backward()
    assert torch.allclose(g, x.grad, atol=1e-5)


def test_embedder_matches_window_by_window_and_drops_heads(lcfg):
    torch.manual_seed(0)
    mc = {**{k: lcfg["model"][k] for k in sl.MODEL_KEYS}, "in_dim": 28, "task_ids": ["nwp", "smp"]}
    model = LisbetModel(mc).eval()
    emb = sl.export_embedder(mc, model.state_dict())
    assert not any(k.startswith("heads") for k in emb.state_dict())
    frames = torch.randn(40, 28)
    W = mc["window"]
    got = emb.embed_sequence(frames, batch_size=7)
    padded = torch.cat([frames[:1].expand(W - 1, -1), frames])
    with torch.no_grad():
        want = torch.stack([model.backbone(padded[t:t + W][None])[0] for t in range(40)])
    assert got.shape == (40, mc["emb_dim"]) and torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        Embedder({**mc, "emb_dim": 9})


def test_generator_behaviours_are_temporal(lcfg):
    e = dict(lcfg["data"]["embedded"], duration=20.0)
    kp, lab = dl.simulate_sequence(600, e, np.random.default_rng(1))
    assert kp.shape == (600, 2, 7, 2) and lab.shape == (600,)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    # the resident moves faster in attack than in mount: the label is in the motion
    speed = np.linalg.norm(np.diff(kp[:, 0].mean(1), axis=0), axis=1)
    if (lab[1:] == 0).any() and (lab[1:] == 2).any():
        assert speed[lab[1:] == 0].mean() > 2 * speed[lab[1:] == 2].mean()


# ----------------------------------------------------------------------------- CalMS21
def _calms21_json(names, T=30, annotated=True, seed=0):
    rng = np.random.default_rng(seed)
    group = {}
    for n in names:
        seq = {"keypoints": rng.uniform(0, 1000, (T, 2, 2, 7)).tolist(), "scores": np.ones((T, 2, 7)).tolist()}
        if annotated:
            seq["annotations"] = rng.integers(0, 4, T).tolist()
            seq["metadata"] = {"vocab": {"attack": 0, "investigation": 1, "mount": 2, "other": 3}}
        group[n] = seq
    return json.dumps({"annotator-id_0": group})


def _zip(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in entries.items():
            z.writestr(name, text)
    return buf.getvalue()


def _cli(tmp_path, *args):
    """The `neurotrain` command the workflow runs, from ``tmp_path`` with relative paths."""
    import subprocess

    from conftest import NEUROTRAIN, snakemake_env

    return subprocess.run([NEUROTRAIN, *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                          env=snakemake_env(), timeout=300)


def _lisbet_config(tmp_path, data: dict, name="c.yaml") -> str:
    import yaml

    cfg = copy.deepcopy(SMALL)
    cfg["data"] = {**cfg["data"], **data}
    (tmp_path / name).write_text(yaml.safe_dump({"systems": ["lisbet"], "lisbet": cfg}))
    return name


def test_calms21_downloaded_and_preprocessed_with_relative_paths(tmp_path):
    """The published layout: train and test reuse mouse ids (task1/train/mouse001 and
    task1/test/mouse001), downloaded from a server on 127.0.0.1 and preprocessed as Snakemake
    runs it (relative paths); the split stays in the name and the test sequence in the test split."""
    task1 = _zip({"task1_classic_classification/calms21_task1_train.json":
                  _calms21_json(["task1/train/mouse001", "task1/train/mouse002"]),
                  "task1_classic_classification/calms21_task1_test.json": _calms21_json(["task1/test/mouse001"], seed=1)})
    unl = _zip({"unlabeled_videos/calms21_unlabeled_videos_part1.json":
                _calms21_json(["unlabeled/mouse201", "unlabeled/mouse202"], annotated=False, seed=2)})
    files = {"task1_classic_classification.zip": task1, "unlabeled_videos.zip": unl}
    md5 = {"task1": hashlib.md5(task1).hexdigest(), "unlabeled": hashlib.md5(unl).hexdigest()}
    srv = LoopbackServer(files, fail_first=1)
    try:
        for n, b in files.items():
            r = _cli(tmp_path, "fetch", "--url", f"{srv.url}/{n}", "--md5", hashlib.md5(b).hexdigest(), "--out",
                     f"data/raw/lisbet/download/{n}")
            assert r.returncode == 0, r.stderr
    finally:
        srv.close()
    cfg = _lisbet_config(tmp_path, {"source": "calms21", "calms21": {"md5": md5}})
    raw = [f"data/raw/lisbet/download/{n}" for n in files]
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", *raw, "--out",
             "data/processed/lisbet.h5")
    assert r.returncode == 0, r.stderr
    d = dl.load_processed(tmp_path / "data/processed/lisbet.h5")
    assert d["names"] == ["task1-test-mouse001", "task1-train-mouse001", "task1-train-mouse002",
                          "unlabeled-mouse201", "unlabeled-mouse202"]
    i = d["names"].index("task1-test-mouse001")
    assert d["split"][i] == 2 and d["keypoints"][i].shape == (30, 2, 7, 2)
    assert d["split"][d["names"].index("task1-train-mouse001")] != 2
    assert (d["annotations"][d["names"].index("unlabeled-mouse201")] == -1).all()
    raw_seq = json.loads(_calms21_json(["task1/test/mouse001"], seed=1))["annotator-id_0"]["task1/test/mouse001"]
    assert np.allclose(d["keypoints"][i][:, 0, 3, 1], np.asarray(raw_seq["keypoints"])[:, 0, 1, 3] / 1024, atol=1e-5)
    assert list(d["annotations"][i]) == raw_seq["annotations"]
    assert sorted(p.name for p in (tmp_path / "data/processed").iterdir()) == ["lisbet.h5"], "nothing else is left"


def test_calms21_is_streamed_one_sequence_at_a_time(tmp_path):
    """Preprocessing an archive holds one sequence in memory, not the archive's JSON: the peak of
    Python allocations stays far below what the JSON of all sequences takes once parsed."""
    import tracemalloc

    names = [f"unlabeled/mouse{i:03d}" for i in range(24)]
    text = _calms21_json(names, T=600, annotated=False)
    z = tmp_path / "unlabeled_videos.zip"
    z.write_bytes(_zip({"unlabeled_videos/calms21_unlabeled_videos_part1.json": text}))
    tracemalloc.start()
    json.loads(text)
    whole = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cfg = validate_system("lisbet", copy.deepcopy(SMALL))
    cfg["data"]["source"] = "calms21"
    cfg["data"]["calms21"]["md5"]["unlabeled"] = hashlib.md5(z.read_bytes()).hexdigest()
    del text
    tracemalloc.start()
    dl.preprocess_raw(cfg, [z], tmp_path / "p.h5")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(dl.load_processed(tmp_path / "p.h5")["names"]) == 24
    assert peak < whole / 6, f"preprocessing peaked at {peak / 2**20:.1f} MiB; the parsed JSON takes {whole / 2**20:.1f}"


def test_zip_entry_escaping_its_folder_is_refused(lcfg, tmp_path):
    bad = tmp_path / "task1_classic_classification.zip"
    bad.write_bytes(_zip({"../../evil.json": _calms21_json(["task1/train/m1"])}))
    cfg = copy.deepcopy(lcfg)
    cfg["data"]["source"] = "calms21"
    cfg["data"]["calms21"]["md5"]["task1"] = hashlib.md5(bad.read_bytes()).hexdigest()
    with pytest.raises(NeurotrainError, match="would be written outside") as exc:
        dl.preprocess_raw(cfg, [bad], tmp_path / "p.h5")
    assert "../../evil.json" in str(exc.value)
    assert not (tmp_path / "p.h5").exists() and not (tmp_path.parent / "evil.json").exists()


def _read_json_entry(tmp_path, text: str):
    from neurotrain.systems.lisbet.poses import read_calms21_zip

    z = tmp_path / "task1_classic_classification.zip"
    z.write_bytes(_zip({"task1_classic_classification/calms21_task1_train.json": text}))
    return z, list(read_calms21_zip(z, 1024, 30.0))


@pytest.mark.parametrize("case,needle", [
    ("truncated", "not valid JSON"),
    ("wrong_shape", "keypoints must be"),
    ("no_keypoints", "has no 'keypoints'"),
])
def test_bad_calms21_json_named(tmp_path, case, needle):
    text = _calms21_json(["task1/train/m1"])
    if case == "truncated":
        text = text[: len(text) // 2]
    elif case == "wrong_shape":
        text = json.dumps({"a": {"m1": {"keypoints": np.zeros((5, 2, 7)).tolist()}}})
    else:
        text = json.dumps({"a": {"m1": {"annotations": [0, 1]}}})
    with pytest.raises(NeurotrainError, match=needle) as exc:
        _read_json_entry(tmp_path, text)
    assert "calms21_task1_train.json" in str(exc.value)


# ----------------------------------------------------------------------------- pose files
def _movement_file(path: Path, T=40, kp_names=dl.KEYPOINTS, n_ind=2, nan_frames=0, fps=30.0):
    """A pose file in movement's netCDF layout: position (time, space, keypoints, individuals)
    with dimension scales, root attribute fps and time in seconds, as xarray/netCDF4 writes it."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, (T, 2, len(kp_names), n_ind))
    if nan_frames:
        pos[5:5 + nan_frames, :, 0, 0] = np.nan
    with h5py.File(path, "w") as h:
        for name, values in (("time", np.arange(T) / fps), ("space", np.array([b"x", b"y"])),
                             ("keypoints", np.array([k.encode() for k in kp_names])),
                             ("individuals", np.array([f"id_{i}".encode() for i in range(n_ind)]))):
            h.create_dataset(name, data=values)
            h[name].make_scale(name)
        h.create_dataset("position", data=pos)
        for i, name in enumerate(("time", "space", "keypoints", "individuals")):
            h["position"].dims[i].attach_scale(h[name])
        h.attrs.update(fps=fps, time_unit="seconds", ds_type="poses", source_software="DeepLabCut")
    return pos


def _pose(T=60, names=("snout", "earL", "earR", "neck", "hipL", "hipR", "tailbase", "tailtip"), fps=30.0, phase=0.0):
    """Smooth two-mouse trajectories [T, space, keypoints, individuals] at ``fps``, sampled from
    the same function of time whatever the rate."""
    t = np.arange(T)[:, None, None, None] / fps + phase
    k = np.arange(len(names))[None, None, :, None]
    m = np.arange(2)[None, None, None, :]
    xy = np.arange(2)[None, :, None, None]
    return 100 + 50 * np.sin(0.7 * t + 0.3 * k + 1.1 * m + 0.5 * xy)


def _write_pose(path: Path, pos, names, fmt: str, fps=30.0):
    """``pos`` written by movement itself in ``fmt`` (netCDF4, netCDF3, DeepLabCut, SLEAP)."""
    from movement.io import load_poses, save_poses

    ds = load_poses.from_numpy(pos, np.ones((len(pos), pos.shape[2], 2)), individual_names=["male1", "male2"],
                               keypoint_names=list(names), fps=fps, source_software="DeepLabCut")
    if fmt == "netCDF4":
        ds.to_netcdf(path)
    elif fmt == "netCDF3":
        ds.to_netcdf(path, engine="scipy")
    elif fmt == "DeepLabCut":
        save_poses.to_dlc_file(ds, path, split_individuals=False)
    else:
        save_poses.to_sleap_analysis_file(ds, path)


@pytest.mark.parametrize("fmt,suffix", [("netCDF4", "nc"), ("netCDF3", "nc"), ("DeepLabCut", "h5"),
                                        ("DeepLabCut", "csv"), ("SLEAP", "h5")])
def test_pose_files_of_every_format_through_the_cli(tmp_path, fmt, suffix):
    """Files written by movement in each layout, keypoints renamed through the config and a subset
    chosen, pixel coordinates scaled: the processed keypoints equal the file's, in model order."""
    names = ("snout", "earL", "earR", "neck", "hipL", "hipR", "tailbase", "tailtip")
    pos = _pose(names=names)
    (tmp_path / "poses").mkdir()
    _write_pose(tmp_path / "poses" / f"pair.{suffix}", pos, names, fmt)
    model_kp = ["nose", "left_ear", "right_ear", "tail"]
    movement = {"paths": [f"poses/pair.{suffix}"], "keypoint_map": {"snout": "nose", "earL": "left_ear",
                                                                    "earR": "right_ear", "tailbase": "tail"},
                "frame_width": 1024.0}
    if fmt in ("DeepLabCut", "SLEAP"):
        movement["fps"] = 30.0  # these files do not record their frame rate
    cfg = _lisbet_config(tmp_path, {"source": "movement", "keypoints": model_kp, "movement": movement})
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", f"poses/pair.{suffix}",
             "--out", "p.h5")
    assert r.returncode == 0, r.stderr
    d = dl.load_processed(tmp_path / "p.h5")
    got = d["keypoints"][0]  # [T, mice, K, xy]
    want = pos[:, :, [names.index(n) for n in ("snout", "earL", "earR", "tailbase")], :].transpose(0, 3, 2, 1) / 1024
    assert got.shape == (60, 2, 4, 2) and np.allclose(got, want, atol=1e-5)
    with h5py.File(tmp_path / "p.h5") as h:
        assert [str(k) for k in h.attrs["keypoints"]] == model_kp and float(h.attrs["fps"]) == 30.0


def test_pose_file_without_a_frame_rate_needs_the_config(tmp_path):
    names = dl.KEYPOINTS
    _write_pose(tmp_path / "pair.h5", _pose(names=names), names, "DeepLabCut")
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": ["pair.h5"]}})
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", "pair.h5", "--out", "p.h5")
    assert r.returncode == 2 and "pair.h5: the file gives no frame rate: set lisbet.data.movement.fps" in r.stderr
    assert not (tmp_path / "p.h5").exists()


def test_mixed_frame_rates_resampled_to_the_model_rate_or_refused(tmp_path):
    """Two files at 30 fps and two at 60 fps of the same motion: each file's own rate is used, the
    60 fps ones are brought to the model's 30 fps (equal to the 30 fps recording of the same motion);
    with resampling off the first 60 fps file is refused by name, and nothing is written."""
    names = dl.KEYPOINTS
    paths = []
    for i, fps in enumerate([30.0, 30.0, 60.0, 60.0]):
        p = f"pair{i}.nc"
        _write_pose(tmp_path / p, _pose(T=int(4 * fps), names=names, fps=fps), names, "netCDF4", fps=fps)
        paths.append(p)
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": paths}, "fps": 30.0})
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", *paths, "--out", "p.h5")
    assert r.returncode == 0, r.stderr
    assert "pair2.nc: 240 frames at 60 fps resampled to 120 frames at 30 fps" in r.stderr
    d = dl.load_processed(tmp_path / "p.h5")
    k = {n: kp for n, kp in zip(d["names"], d["keypoints"])}
    assert k["pair2"].shape == k["pair0"].shape == (120, 2, 7, 2)
    assert np.allclose(k["pair2"], k["pair0"], atol=1e-5)
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": paths}, "resample": False}, "d.yaml")
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", *paths, "--out", "q.h5")
    assert r.returncode == 2 and "pair2.nc: recorded at 60 fps, the model's rate is 30 (lisbet.data.fps)" in r.stderr
    assert not (tmp_path / "q.h5").exists()


def test_low_confidence_becomes_a_gap_and_other_individuals_are_named(tmp_path):
    from movement.io import load_poses

    names = dl.KEYPOINTS
    pos = _pose(names=names)
    conf = np.ones((len(pos), len(names), 3))
    conf[10:12, 0, 0] = 0.1  # nose of the first mouse, two frames
    ds = load_poses.from_numpy(np.concatenate([pos, pos[..., :1]], axis=3), conf,
                               individual_names=["m1", "m2", "m3"], keypoint_names=list(names), fps=30.0,
                               source_software="SLEAP")
    ds.to_netcdf(tmp_path / "three.nc")
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": ["three.nc"]}})
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", "three.nc", "--out", "p.h5")
    assert r.returncode == 2 and "three.nc: need 2 individuals, resident first; the file has 3 (m1, m2, m3)" in r.stderr
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": ["three.nc"], "individuals": ["m3", "m1"],
                                                                       "min_confidence": 0.5}}, "d.yaml")
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", "three.nc", "--out", "p.h5")
    assert r.returncode == 0, r.stderr
    got = dl.load_processed(tmp_path / "p.h5")["keypoints"][0]
    assert np.allclose(got[:, 0], pos[..., 0].transpose(0, 2, 1), atol=1e-4)  # m3 = m1's copy, resident
    # the two low-confidence frames were dropped and filled by interpolation, not kept as tracked
    assert np.allclose(got[10:12, 1, 0, 0], np.interp([10, 11], [9, 12], pos[[9, 12], 0, 0, 0]), atol=1e-4)


@pytest.mark.parametrize("kw,needle", [
    ({"kp_names": dl.KEYPOINTS[:-1]}, "keypoint(s) tail missing"),
    ({"n_ind": 3}, "need 2 individuals"),
])
def test_bad_movement_file_named(tmp_path, kw, needle):
    from neurotrain.systems.lisbet.poses import read_pose_file

    _movement_file(tmp_path / "m.nc", **kw)
    m = validate_system("lisbet", {})["data"]["movement"]
    with pytest.raises(NeurotrainError, match=needle.replace("(", r"\(").replace(")", r"\)")) as exc:
        read_pose_file(tmp_path / "m.nc", m, list(dl.KEYPOINTS))
    assert "m.nc" in str(exc.value)


def test_nan_keypoints_filled_or_refused_and_short_sequences(lcfg, tmp_path):
    cfg = copy.deepcopy(lcfg)
    cfg["data"]["source"] = "movement"
    cfg["data"]["max_gap_frames"] = 5
    pos = _movement_file(tmp_path / "short_gap.nc", nan_frames=3)
    dl.preprocess_raw(cfg, [tmp_path / "short_gap.nc"], tmp_path / "p.h5")
    d = dl.load_processed(tmp_path / "p.h5")
    filled = d["keypoints"][0][:, 0, 0, 0]
    assert np.isfinite(filled).all()
    assert np.allclose(filled[5:8], np.interp([5, 6, 7], [4, 8], [pos[4, 0, 0, 0], pos[8, 0, 0, 0]]), atol=1e-6)
    _movement_file(tmp_path / "long_gap.nc", nan_frames=9)
    with pytest.raises(NeurotrainError, match="resident nose missing for 9 frames") as exc:
        dl.preprocess_raw(cfg, [tmp_path / "long_gap.nc"], tmp_path / "q.h5")
    assert "long_gap" in str(exc.value) and not (tmp_path / "q.h5").exists()
    _movement_file(tmp_path / "tiny.nc", T=8)
    with pytest.raises(NeurotrainError, match="fewer than one window"):
        dl.preprocess_raw(cfg, [tmp_path / "tiny.nc"], tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


def test_training_writes_run_id_folder_and_resumes_exactly(lcfg, tmp_path, monkeypatch):
    from neurotrain.errors import Interrupted

    dl.generate_embedded(lcfg, tmp_path / "raw")
    dl.preprocess_raw(lcfg, [tmp_path / "raw"], tmp_path / "p.h5")
    cfg = copy.deepcopy(lcfg)
    cfg["training"]["epochs"] = 3
    sl.run_training(cfg, str(tmp_path / "p.h5"), str(tmp_path / "a"))
    rid = tmp_path / "a" / "lisbet8x1-embedded"  # run_id null: lisbet<emb_dim>x<num_layers>-<source>
    for f in ("model_config.json", "weights/weights_last.pt", "weights/weights_best.pt", "training_history.json"):
        assert (rid / f).is_file(), f
    # interrupt after epoch 2, resume, compare with the uninterrupted run
    real = sl.LisbetTask.evaluate
    calls = {"n": 0}

    def interrupting(self):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop saves its state at the end of this epoch
        return real(self)

    monkeypatch.setattr(sl.LisbetTask, "evaluate", interrupting)
    with pytest.raises(Interrupted):
        sl.run_training(cfg, str(tmp_path / "p.h5"), str(tmp_path / "b"))
    monkeypatch.setattr(sl.LisbetTask, "evaluate", real)
    sl.run_training(cfg, str(tmp_path / "p.h5"), str(tmp_path / "b"))
    a = torch.load(tmp_path / "a" / "model_final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model_final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_exported_embedder_loads_in_lisbet_and_embeds_the_same(lcfg, tmp_path):
    """export/models/<run_id>-embedder/ is what lisbet 0.4.3's export_embedder writes: its own
    loader (lisbet.io.load_model) builds the model with every parameter taken (none missing, none
    unexpected), and its "embedding" head gives the workflow's embedding of each window. Eight
    keypoints per mouse (not CalMS21's seven) to show the input width follows the data."""
    import logging

    import yaml
    from lisbet.io import load_model

    from neurotrain.systems.lisbet.extract import extract

    cfg = copy.deepcopy(lcfg)
    kp8 = _coded_keypoints(n_seq=4, T=60)
    kps = [np.concatenate([k, k[:, :, :1] + 0.5], 2) / 1000.0 for k in kp8]  # [T, 2, 8, 2]
    with h5py.File(tmp_path / "p.h5", "w") as h:
        for i, k in enumerate(kps):
            h.create_dataset(f"sequences/s{i}/keypoints", data=k.astype(np.float32))
            h.create_dataset(f"sequences/s{i}/annotations", data=np.zeros(len(k), np.int16))
        h.create_dataset("split", data=np.array([0, 0, 1, 2], np.int8))
        names8 = [*dl.KEYPOINTS, "tail_tip"]
        h.attrs.update(sequence_names=[f"s{i}" for i in range(4)], behaviors=list(dl.BEHAVIORS), keypoints=names8,
                       individuals=list(dl.INDIVIDUALS), fps=30.0, source="movement")
    sl.run_training(cfg, str(tmp_path / "p.h5"), str(tmp_path / "model"))
    extract(cfg, str(tmp_path / "model"), str(tmp_path / "p.h5"), str(tmp_path))
    folder = tmp_path / "export" / "models" / "lisbet8x1-movement-embedder"
    config = yaml.safe_load((folder / "model_config.yml").read_text())
    assert config["input_features"] == {"individuals": ["resident", "intruder"], "keypoints": names8,
                                        "space": ["x", "y"]}
    assert config["backbone"]["feature_dim"] == 2 * 8 * 2 and config["window_size"] == 12
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logging.getLogger().addHandler(handler)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        model = load_model(folder / "model_config.yml", folder / "weights" / "weights_last.pt").eval()
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    assert any("Missing keys: []" in r and "Unexpected keys: []" in r for r in records), records
    frames = torch.as_tensor(kps[2].reshape(60, -1), dtype=torch.float32)
    windows = frames.unfold(0, 12, 1).permute(0, 2, 1)  # the full windows, ending at frames 11..59
    with torch.no_grad():
        got = model(windows, "embedding").numpy()
    want = np.load(tmp_path / "outputs" / "embedding_s2.npy")[11:]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_calms21_unknown_label_and_duplicate_names(lcfg, tmp_path):
    doc = json.loads(_calms21_json(["task1/train/m1"], T=5))
    doc["annotator-id_0"]["task1/train/m1"]["annotations"] = [0, 1, 7, 3, 2]  # 7 is not in the vocabulary
    _, recs = _read_json_entry(tmp_path, json.dumps(doc))
    assert [r.name for r in recs] == ["task1-train-m1"] and list(recs[0].annotations) == [0, 1, -1, 3, 2]
    doc["annotator-id_1"] = {"task1/train/m1": doc["annotator-id_0"]["task1/train/m1"]}  # a second annotator
    z, _ = _read_json_entry(tmp_path, json.dumps(doc))
    cfg = copy.deepcopy(lcfg)
    cfg["data"]["source"] = "calms21"
    cfg["data"]["calms21"]["md5"]["task1"] = hashlib.md5(z.read_bytes()).hexdigest()
    cfg["model"]["window"] = 4
    with pytest.raises(NeurotrainError, match="sequence 'task1-train-m1' appears twice"):
        dl.preprocess_raw(cfg, [z], tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


def test_archive_larger_than_allowed_is_refused(tmp_path):
    """An archive that unpacks to more than the cap is refused before anything is written."""
    from neurotrain.systems.lisbet.poses import read_calms21_zip

    z = tmp_path / "task1_classic_classification.zip"
    text = _calms21_json(["task1/train/m1"], T=20)
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.json", text)
    with pytest.raises(NeurotrainError, match="unpacks to .* more than the"):
        list(read_calms21_zip(z, 1024, 30.0, max_bytes=len(text) - 1))
    assert [r.name for r in read_calms21_zip(z, 1024, 30.0, max_bytes=len(text))] == ["task1-train-m1"]


def test_pose_file_faults_users_make_are_named_in_one_line(tmp_path):
    """Frames subsampled with the fps attribute left as it was; an individual named otherwise than
    in the file; a one-animal file; a netCDF file that is not one (the library's message spans
    lines): each one line naming the file, exit 2, nothing written. A file without confidence
    values and min_confidence set is read, with a warning."""
    from movement.io import load_poses

    names = dl.KEYPOINTS
    ds = load_poses.from_numpy(_pose(T=120, names=names, fps=60.0), np.ones((120, 7, 2)),
                               individual_names=["resident", "intruder"], keypoint_names=list(names), fps=60.0,
                               source_software="DeepLabCut")
    ds.isel(time=slice(None, None, 2)).to_netcdf(tmp_path / "sub.nc")  # 30 fps of frames, fps attribute still 60
    ds.isel(individuals=[0]).to_netcdf(tmp_path / "one.nc")
    (tmp_path / "bad.nc").write_text("not netcdf\n")
    load_poses.from_numpy(_pose(T=60, names=names), None, individual_names=["a", "b"], keypoint_names=list(names),
                          fps=30.0, source_software="SLEAP").to_netcdf(tmp_path / "noconf.nc")
    cases = [("sub.nc", {}, "sub.nc: its fps attribute (60) contradicts its time coordinate"),
             ("sub.nc", {"individuals": ["Resident", "intruder"]},
              "sub.nc: individual(s) Resident of lisbet.data.movement.individuals not in the file; the file has 2"),
             ("one.nc", {}, "one.nc: need 2 individuals per recording (resident and intruder); the file has 1"),
             ("bad.nc", {}, "bad.nc: not a netCDF pose file")]
    for i, (f, extra, needle) in enumerate(cases):
        cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": [f], "frame_width": 200.0, **extra}},
                             f"c{i}.yaml")
        r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", f, "--out", "p.h5")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (f, r.stderr)
        assert not (tmp_path / "p.h5").exists()
    cfg = _lisbet_config(tmp_path, {"source": "movement", "movement": {"paths": ["noconf.nc"], "min_confidence": 0.5,
                                                                        "frame_width": 200.0}}, "n.yaml")
    r = _cli(tmp_path, "preprocess", "--system", "lisbet", "--config", cfg, "--raw", "noconf.nc", "--out", "p.h5")
    assert r.returncode == 0 and "no confidence values (all NaN)" in r.stderr, r.stderr

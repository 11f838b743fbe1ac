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
from neurotrain.fetch import download
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


def _coded_frames(n_seq=4, T=200):
    """Frames whose values encode (sequence, time, mouse): x = 1000 s + t, y = mouse."""
    kps = []
    for s in range(n_seq):
        k = np.zeros((T, 2, 7, 2), np.float32)
        k[..., 0] = (1000 * s + np.arange(T))[:, None, None]
        k[:, 1, :, 1] = 1
        kps.append(k)
    return sl.Frames(kps)


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


def test_calms21_from_loopback_server(lcfg, tmp_path):
    task1 = _zip({"task1_classic_classification/calms21_task1_train.json": _calms21_json(["task1/train/mouse001", "task1/train/mouse002"]),
                  "task1_classic_classification/calms21_task1_test.json": _calms21_json(["task1/test/mouse101"], seed=1)})
    unl = _zip({"unlabeled_videos/calms21_unlabeled_videos_part1.json": _calms21_json(["unlabeled/mouse201", "unlabeled/mouse202"], annotated=False, seed=2)})
    files = {"task1_classic_classification.zip": task1, "unlabeled_videos.zip": unl}
    srv = LoopbackServer(files, fail_first=1)
    cfg = copy.deepcopy(lcfg)
    cfg["data"]["source"] = "calms21"
    cfg["data"]["calms21"]["md5"] = {"task1": hashlib.md5(task1).hexdigest(), "unlabeled": hashlib.md5(unl).hexdigest()}
    try:
        got = [download(f"{srv.url}/{n}", tmp_path / "dl" / n, hashlib.md5(b).hexdigest(), retries=3, backoff=0)
               for n, b in files.items()]
    finally:
        srv.close()
    dl.preprocess_raw(cfg, got, tmp_path / "p.h5")
    d = dl.load_processed(tmp_path / "p.h5")
    assert sorted(d["names"]) == ["mouse001", "mouse002", "mouse101", "mouse201", "mouse202"]
    i = d["names"].index("mouse101")
    assert d["split"][i] == 2 and d["keypoints"][i].shape == (30, 2, 7, 2)
    assert (d["annotations"][d["names"].index("mouse201")] == -1).all()
    raw = json.loads(_calms21_json(["task1/test/mouse101"], seed=1))["annotator-id_0"]["task1/test/mouse101"]
    assert np.allclose(d["keypoints"][i][:, 0, 3, 1], np.asarray(raw["keypoints"])[:, 0, 1, 3] / 1024, atol=1e-5)
    assert list(d["annotations"][i]) == raw["annotations"]
    assert not list((tmp_path).glob(".extract_*")), "extracted files are removed"


def test_zip_entry_escaping_target_is_refused(lcfg, tmp_path):
    bad = tmp_path / "task1_classic_classification.zip"
    bad.write_bytes(_zip({"../../evil.json": "{}"}))
    with pytest.raises(NeurotrainError, match="would be written outside") as exc:
        dl.safe_extract(bad, tmp_path / "x")
    assert "../../evil.json" in str(exc.value)
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "evil.json").exists()
    cfg = copy.deepcopy(lcfg)
    cfg["data"]["source"] = "calms21"
    cfg["data"]["calms21"]["md5"]["task1"] = hashlib.md5(bad.read_bytes()).hexdigest()
    with pytest.raises(NeurotrainError, match="outside"):
        dl.preprocess_raw(cfg, [bad], tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


@pytest.mark.parametrize("case,needle", [
    ("truncated", "not valid JSON"),
    ("wrong_shape", "keypoints must be"),
    ("no_keypoints", "has no 'keypoints'"),
])
def test_bad_calms21_json_named(tmp_path, case, needle):
    f = tmp_path / "calms21_task1_train.json"
    text = _calms21_json(["task1/train/m1"])
    if case == "truncated":
        text = text[: len(text) // 2]
    elif case == "wrong_shape":
        text = json.dumps({"a": {"m1": {"keypoints": np.zeros((5, 2, 7)).tolist()}}})
    else:
        text = json.dumps({"a": {"m1": {"annotations": [0, 1]}}})
    f.write_text(text)
    with pytest.raises(NeurotrainError, match=needle) as exc:
        dl.read_calms21_json(f, 1024)
    assert str(f) in str(exc.value)


# ----------------------------------------------------------------------------- movement files
def _movement_file(path: Path, T=40, kp_names=dl.KEYPOINTS, n_ind=2, nan_frames=0):
    """A pose file in movement's netCDF layout: position (time, space, keypoints, individuals)
    with dimension scales, as xarray/netCDF4 writes it."""
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 1, (T, 2, len(kp_names), n_ind))
    if nan_frames:
        pos[5:5 + nan_frames, :, 0, 0] = np.nan
    with h5py.File(path, "w") as h:
        for name, values in (("time", np.arange(T) / 30.0), ("space", np.array([b"x", b"y"])),
                             ("keypoints", np.array([k.encode() for k in kp_names])),
                             ("individuals", np.array([f"id_{i}".encode() for i in range(n_ind)]))):
            h.create_dataset(name, data=values)
            h[name].make_scale(name)
        h.create_dataset("position", data=pos)
        for i, name in enumerate(("time", "space", "keypoints", "individuals")):
            h["position"].dims[i].attach_scale(h[name])
    return pos


def test_movement_file_read_in_keypoint_order(tmp_path):
    order = tuple(reversed(dl.KEYPOINTS))
    pos = _movement_file(tmp_path / "m.nc", kp_names=order)
    got = dl.read_movement(tmp_path / "m.nc")["keypoints"]
    assert got.shape == (40, 2, 7, 2)
    # nose is the last keypoint in the file, first in ours; individual 1, x then y
    assert np.allclose(got[:, 1, 0, :], pos[:, :, order.index("nose"), 1])


@pytest.mark.parametrize("kw,needle", [
    ({"kp_names": dl.KEYPOINTS[:-1]}, "keypoint(s) tail missing"),
    ({"n_ind": 3}, "need 2 individuals"),
])
def test_bad_movement_file_named(tmp_path, kw, needle):
    _movement_file(tmp_path / "m.nc", **kw)
    with pytest.raises(NeurotrainError, match=needle.replace("(", r"\(").replace(")", r"\)")) as exc:
        dl.read_movement(tmp_path / "m.nc")
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
    rid = tmp_path / "a" / cfg["training"]["run_id"]
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


def test_calms21_unknown_label_and_duplicate_names(tmp_path):
    f = tmp_path / "calms21_task1_train.json"
    doc = json.loads(_calms21_json(["task1/train/m1"], T=5))
    doc["annotator-id_0"]["task1/train/m1"]["annotations"] = [0, 1, 7, 3, 2]  # 7 is not in the vocabulary
    f.write_text(json.dumps(doc))
    assert list(dl.read_calms21_json(f, 1024)["m1"]["annotations"]) == [0, 1, -1, 3, 2]
    doc["annotator-id_1"] = {"task1/test/m1": doc["annotator-id_0"]["task1/train/m1"]}
    f.write_text(json.dumps(doc))
    with pytest.raises(NeurotrainError, match="two sequences named 'm1'"):
        dl.read_calms21_json(f, 1024)


def test_archive_larger_than_allowed_is_refused(tmp_path):
    """An archive that unpacks to more than the cap is refused before anything is written."""
    import zipfile

    from neurotrain.systems.lisbet.data import safe_extract

    z = tmp_path / "big.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.json", "0" * 10_000)  # compresses to a few dozen bytes
    with pytest.raises(NeurotrainError, match="unpacks to .* more than the"):
        safe_extract(z, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in safe_extract(z, tmp_path / "ok")] == ["a.json"]

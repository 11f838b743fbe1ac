"""The bad-input catalogue (docs/data-formats.md, "Bad input"): one test per row, through the command line a
user (or a Snakemake rule) runs. Every row checks the exit status, that the message names the
file or config key, that there is no traceback, that no partial output is left (no file, no
temporary sibling) and that an earlier result at the output path, or beside it, is unchanged.

The command runs in the test's directory with the paths under it relative, as Snakemake's rules pass them.

The table of docs/data-formats.md lists the same row ids, in the same order, as ``CATALOGUE`` (checked)."""

from __future__ import annotations

import copy
import gzip
import hashlib
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from _http import LoopbackServer
from conftest import NEUROTRAIN, ROOT, snakemake_env, workflow_copy

SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
EARLIER = b"an earlier result that must survive"


@dataclass
class Case:
    argv: list[str]                     # after `neurotrain` (or a full command if argv[0] == "snakemake")
    where: str                          # the file or key the message must name
    needle: str                         # what the message must say
    code: int = 2
    absent: list[Path] = field(default_factory=list)   # must not exist afterwards
    kept: list[Path] = field(default_factory=list)     # hold EARLIER before, and after
    cwd: Path | None = None
    stream: str = "stderr"
    unprivileged: bool = False          # run without root's power to bypass file permissions


def _config(tmp: Path, system: str, override: dict, name="config.yaml") -> Path:
    cfg = {"systems": [system], system: copy.deepcopy(SMOKE.get(system, {}))}

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(cfg[system], override)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _earlier(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(EARLIER)
    return path


def _preprocess(tmp: Path, system: str, override: dict, raw: list[Path], where, needle) -> Case:
    out = _earlier(tmp / "out" / "processed.h5")
    cfg = _config(tmp, system, override)
    return Case(["preprocess", "--system", system, "--config", str(cfg), "--raw", *map(str, raw), "--out", str(out)],
                str(where), needle, kept=[out])


# ------------------------------------------------------------------------------ rows: config
def _train_with(tmp, system: str, text: str, key: str, needle: str) -> Case:
    """`train` with a config file holding ``text``: refused before anything is written."""
    cfg = tmp / "c.yaml"
    cfg.write_text(text)
    return Case(["train", "--system", system, "--config", str(cfg), "--data", str(tmp / "p.h5"),
                 "--out-dir", str(tmp / "model")], key, needle, absent=[tmp / "model"])


def _generate_with(tmp, text: str | None, needle: str, **kw) -> Case:
    """`generate` with a config file holding ``text`` (None: no file at all)."""
    cfg = tmp / ("absent.yaml" if text is None else "c.yaml")
    if text is not None:
        cfg.write_text(text)
    return Case(["generate", "--system", "ei_rnn", "--config", str(cfg), "--out-dir", str(tmp / "raw")],
                str(cfg), needle, absent=[tmp / "raw"], **kw)


def config_unknown_key(tmp):
    return _train_with(tmp, "ei_rnn", "ei_rnn:\n  training:\n    max_epochz: 10\n", "ei_rnn.training.max_epochz",
                       "unknown key")


def config_wrong_type(tmp):
    return _train_with(tmp, "ei_rnn", "ei_rnn:\n  training:\n    max_epochs: ten\n", "ei_rnn.training.max_epochs",
                       "is not of type 'integer'")


def config_out_of_range(tmp):
    return _train_with(tmp, "cebra", "cebra:\n  training:\n    learning_rate: -0.1\n", "cebra.training.learning_rate",
                       "minimum")


def config_missing_file(tmp):
    return _generate_with(tmp, None, "config file not found")


def config_not_yaml(tmp):
    return _generate_with(tmp, "ei_rnn: [unclosed\n", "not valid YAML")


def config_python_tag(tmp):
    case = _generate_with(tmp, "ei_rnn: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML", cwd=tmp)
    case.absent.append(tmp / "pwned")
    return case


def config_duplicate_key(tmp):
    """PyYAML keeps the last of two equal keys: the first `ei_rnn:` block would vanish silently."""
    return _generate_with(tmp, "ei_rnn:\n  data: {val_fraction: 0.5}\nei_rnn:\n  training: {max_epochs: 3}\n",
                          "key 'ei_rnn' given twice (line 3)")


def config_nan(tmp):
    return _train_with(tmp, "ei_rnn", "ei_rnn:\n  loss:\n    lambda_reg: .nan\n", "ei_rnn.loss.lambda_reg",
                       "is not a finite number")


def config_not_utf8(tmp):
    case = _generate_with(tmp, "x", "not UTF-8 text")
    Path(case.argv[4]).write_bytes(b"ei_rnn:\n  data: {source: \xe9mbedded}\n")
    return case


def workflow_duplicate_key(tmp):
    wd = _wf(tmp)
    (wd / "config" / "bad.yaml").write_text("systems: [ei_rnn]\nsystems: [cebra]\n")
    return Case(["snakemake", "-n", "--configfile", "config/bad.yaml"], "config/bad.yaml",
                "key 'systems' given twice (line 2)", code=1, absent=[wd / "results", wd / "data"], cwd=wd,
                stream="both")


def checkpoint_stray_file(tmp, processed):
    """A copy a file manager made beside the checkpoints: not a state of this run, left to the
    fresh start's clean-up, never parsed as an epoch number."""
    model = tmp / "model"
    (model / "checkpoints").mkdir(parents=True)
    (model / "checkpoints" / "model_epoch2 (copy).pt").write_bytes(b"a copy")
    cfg = _config(tmp, "ei_rnn", {})
    return Case(["train", "--system", "ei_rnn", "--config", str(cfg), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(model)], "model_epoch2 (copy).pt", "removing stale checkpoints", code=0,
                kept=[processed["ei_rnn"]])


def config_model_heads(tmp):
    return _train_with(tmp, "lisbet", "lisbet:\n  model:\n    emb_dim: 8\n    num_heads: 3\n",
                       "lisbet.model.num_heads", "3 attention heads do not divide emb_dim 8")


def config_not_mapping(tmp):
    return _generate_with(tmp, "- ei_rnn\n- cebra\n", "a config must be a mapping")


def unknown_system(tmp):
    return Case(["generate", "--system", "hopfield", "--out-dir", str(tmp / "raw")], "system 'hopfield'",
                "unknown system", absent=[tmp / "raw"])


def _wf(tmp: Path) -> Path:
    (tmp / "wf").mkdir()
    return workflow_copy(tmp / "wf")


def workflow_unknown_key(tmp):
    wd = _wf(tmp)
    (wd / "config" / "bad.yaml").write_text("ei_rnn:\n  trainig:\n    max_epochs: 3\n")
    return Case(["snakemake", "-n", "--configfile", "config/bad.yaml"], "ei_rnn.trainig", "unknown key",
                code=1, absent=[wd / "results", wd / "data"], cwd=wd, stream="both")


def workflow_unknown_system(tmp):
    wd = _wf(tmp)
    (wd / "config" / "bad.yaml").write_text("systems: [ei_rnn, hopfield]\n")
    return Case(["snakemake", "-n", "--configfile", "config/bad.yaml"], "hopfield", "is not one of",
                code=1, absent=[wd / "results", wd / "data"], cwd=wd, stream="both")


def workflow_url_runs_shell(tmp):
    """A download address whose file name would run a command in the fetch rule's shell."""
    wd = _wf(tmp)
    (wd / "config" / "bad.yaml").write_text(
        "systems: [ring_attractor]\nring_attractor:\n  data:\n    source: nwb\n    nwb:\n"
        "      url: 'http://127.0.0.1:9/rec$(touch PWNED).nwb'\n      md5: '" + "0" * 32 + "'\n")
    return Case(["snakemake", "--configfile", "config/bad.yaml"], "ring_attractor.data.nwb.url",
                "is not a plain name", code=1, absent=[wd / "PWNED", wd / "results" / "ring_attractor", wd / "data"],
                cwd=wd, stream="both")


def config_download_name_path(tmp):
    return _train_with(tmp, "cebra", "cebra:\n  data:\n    rat:\n      names: ['../../evil', buddy]\n",
                       "cebra.data.rat.names.0", "does not match")


def config_run_id_not_plain(tmp):
    return _train_with(tmp, "lisbet", "lisbet:\n  training:\n    run_id: '.'\n", "lisbet.training.run_id",
                       "does not match")


def config_run_id_reserved(tmp):
    return _train_with(tmp, "lisbet", "lisbet:\n  training:\n    run_id: model_best.pt\n", "lisbet.training.run_id",
                       "taken by the workflow's own files")


# ------------------------------------------------------------------------------ rows: MATLAB
def _mat(tmp, kind):
    from test_matlab import _write_bad

    (tmp / "raw").mkdir()
    return _write_bad(tmp / "raw", kind)


def mat_missing(tmp):
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [tmp / "absent.mat"], tmp / "absent.mat",
                       "file not found")


def mat_truncated(tmp):
    bad = _mat(tmp, "truncated")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "truncated or corrupt")


def mat_nan(tmp):
    bad = _mat(tmp, "nan")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "NaN/Inf")


def mat_missing_variable(tmp):
    bad = _mat(tmp, "missing_variable")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "missing variable 'ei_labels'")


def mat_wrong_shape(tmp):
    bad = _mat(tmp, "shapes")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "expected 6 (one per trial)")


def mat_no_time_bins(tmp):
    bad = _mat(tmp, "no_time_bins")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "no trials, time bins or neurons")


def mat_overflow(tmp):
    bad = _mat(tmp, "overflow")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "beyond float32's range")


# ------------------------------------------------------------------------------ rows: downloads
def download_md5_mismatch(tmp, server):
    server.files["rat.jl.gz"] = b"these are not the bytes you are looking for"
    out = tmp / "dl" / "rat.jl.gz"
    return Case(["fetch", "--url", f"{server.url}/rat.jl.gz", "--md5", "0" * 32,
                 "--retries", "2", "--out", str(out)], f"{server.url}/rat.jl.gz", "checksum mismatch", absent=[out])


def download_file_url(tmp, server):
    """A `file://` address would copy any local file into the data folder; local files are given
    by the source's own path key instead."""
    out = tmp / "dl" / "secret.jl.gz"
    return Case(["fetch", "--url", "file:///etc/hostname", "--md5", "0" * 32, "--out", str(out)],
                "file:///etc/hostname", "only http(s) addresses are downloaded", absent=[out])


def download_unreachable(tmp, server):
    out = tmp / "dl" / "absent.hdf5"
    return Case(["fetch", "--url", f"{server.url}/absent.hdf5", "--md5", "0" * 32,
                 "--retries", "2", "--out", str(out)], "absent.hdf5", "404", absent=[out])


# ------------------------------------------------------------------------------ rows: CEBRA
def rat_pickle_corrupt(tmp):
    files = []
    md5 = {}
    for name in ("achilles", "buddy"):
        f = tmp / "raw" / f"{name}.jl.gz"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(gzip.compress(b"not a pickle " + name.encode()))
        md5[name] = hashlib.md5(f.read_bytes()).hexdigest()
        files.append(f)
    return _preprocess(tmp, "cebra", {"data": {"source": "rat", "rat": {"names": ["achilles", "buddy"], "md5": md5}}},
                       files, files[0], "corrupt joblib")


def rat_checksum_mismatch(tmp):
    f = tmp / "raw" / "achilles.jl.gz"
    f.parent.mkdir()
    f.write_bytes(gzip.compress(b"cos\nsystem\n(S'touch pwned'\ntR."))  # a pickle that would run a command
    g = tmp / "raw" / "buddy.jl.gz"
    g.write_bytes(f.read_bytes())
    case = _preprocess(tmp, "cebra", {"data": {"source": "rat", "rat": {"names": ["achilles", "buddy"]}}},
                       [f, g], f, "checksum mismatch")
    case.cwd, case.absent = tmp, [tmp / "pwned"]  # unpickling it would have created this file
    return case


def nwb_unreadable(tmp):
    bad = tmp / "raw" / "broken.nwb"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"0" * 100)
    return _preprocess(tmp, "cebra", {"data": {"source": "nwb", "nwb": {"paths": [str(bad)]}}}, [bad], bad,
                       "cannot read NWB")


def _sessions(tmp, mutate):
    from test_cebra import _npz_sessions, _session

    sessions = [_session(seed=0), _session(seed=1)]
    mutate(sessions)
    _npz_sessions(tmp / "raw", sessions)
    return tmp / "raw"


def sessions_nan(tmp):
    raw = _sessions(tmp, lambda s: s[1]["behavior"].__setitem__((3, 0), np.nan))
    return _preprocess(tmp, "cebra", {"data": {"min_session_bins": 50}}, [raw], raw, "session1: behavior has 1 NaN/Inf")


def session_too_short(tmp):
    raw = _sessions(tmp, lambda s: s[1].update(spikes=s[1]["spikes"][:40], behavior=s[1]["behavior"][:40],
                                                latent=s[1]["latent"][:40]))
    return _preprocess(tmp, "cebra", {"data": {"min_session_bins": 50}}, [raw], raw, "shorter than the minimum 50")


def sessions_mismatched_lengths(tmp):
    raw = _sessions(tmp, lambda s: s[0].update(behavior=s[0]["behavior"][:150]))
    return _preprocess(tmp, "cebra", {"data": {"min_session_bins": 50}}, [raw], raw, "behaviour has shape")


def shared_model_mismatched_sessions(tmp, processed):
    cfg = _config(tmp, "cebra", {"model": {"sharing": "shared"}})
    model = tmp / "model"
    return Case(["train", "--system", "cebra", "--config", str(cfg), "--data", str(processed["cebra"]),
                 "--out-dir", str(model)], "model.sharing 'shared'", "needs every session to have 10 neurons",
                absent=[model], kept=[])


# ------------------------------------------------------------------------------ rows: LISBET
def zip_entry_escaping(tmp):
    from test_lisbet import _zip

    bad = tmp / "raw" / "task1_classic_classification.zip"
    bad.parent.mkdir()
    bad.write_bytes(_zip({"../../evil.json": "{}"}))
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    case = _preprocess(tmp, "lisbet", {"data": {"source": "calms21", "calms21": {"md5": {"task1": md5}}}}, [bad],
                       "../../evil.json", "would be written outside")
    case.absent += [tmp / "evil.json", tmp.parent / "evil.json"]
    return case


def calms21_json_truncated(tmp):
    from test_lisbet import _calms21_json, _zip

    text = _calms21_json(["task1/train/m1"])
    bad = tmp / "raw" / "task1_classic_classification.zip"
    bad.parent.mkdir()
    bad.write_bytes(_zip({"task1_classic_classification/calms21_task1_train.json": text[: len(text) // 2]}))
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    return _preprocess(tmp, "lisbet", {"data": {"source": "calms21", "calms21": {"md5": {"task1": md5}}}}, [bad],
                       f"{bad}: task1_classic_classification/calms21_task1_train.json", "not valid JSON")


def movement_missing_keypoint(tmp):
    from test_lisbet import _movement_file

    from neurotrain.systems.lisbet import data as dl

    bad = tmp / "raw" / "pair.nc"
    bad.parent.mkdir()
    _movement_file(bad, kp_names=dl.KEYPOINTS[:-1])
    return _preprocess(tmp, "lisbet", {"data": {"source": "movement"}}, [bad], bad, "keypoint(s) tail missing")


# ------------------------------------------------------------------------------ rows: strain (GWOSC)
def _strain(tmp, **kw):
    from test_cpc_snn import _gwosc_file

    p = tmp / "raw" / "H1.hdf5"
    p.parent.mkdir()
    _gwosc_file(p, **kw)
    return p


_GW = {"data": {"source": "gwosc", "gwosc": {"files": {"H1.hdf5": "0" * 32}, "stride": 0.5}}}


def strain_all_gap(tmp):
    p = _strain(tmp, all_nan=True)
    return _preprocess(tmp, "cpc_snn", _GW, [p], p, "no usable strain")


def strain_rate_mismatch(tmp):
    p = _strain(tmp, rate=2048.0)
    return _preprocess(tmp, "cpc_snn", _GW, [p], p, "sample rate 2048 Hz")


def strain_no_dataset(tmp):
    p = _strain(tmp, dataset=False)
    return _preprocess(tmp, "cpc_snn", _GW, [p], p, "not a GWOSC HDF5 strain file")


def strain_too_short(tmp):
    p = _strain(tmp, seconds=3.0, gps=1126300000.0)
    return _preprocess(tmp, "cpc_snn", _GW, [p], p, "no usable stretch of strain is long enough")


def strain_too_few_noise_segments(tmp):
    p = _strain(tmp, seconds=32.0)
    gw = copy.deepcopy(_GW)
    gw["analysis"] = {"bar_fap": 0.01}
    return _preprocess(tmp, "cpc_snn", gw, [p], p, "needs at least 100")


def strain_dq_flag_unknown(tmp):
    p = _strain(tmp)
    gw = copy.deepcopy(_GW)
    gw["data"]["gwosc"]["dq_flags"] = ["DATA", "CBC_CAT9"]
    return _preprocess(tmp, "cpc_snn", gw, [p], p, "data-quality flag(s) CBC_CAT9 not in the file")


def segments_shorter_than_receptive_field(tmp):
    from neurotrain.config import validate_system
    from neurotrain.systems.cpc_snn import data as gw

    override = {"data": {"segment_duration": 0.1, "injection": {"tc_min": 0.5, "tc_max": 0.9, "chirp_mass_min": 10.0,
                                                                "chirp_mass_max": 12.0, "f_start": 150.0}}}
    cfg_path = _config(tmp, "cpc_snn", override, "gen.yaml")
    cfg = validate_system("cpc_snn", yaml.safe_load(cfg_path.read_text())["cpc_snn"])
    gw.generate_embedded(cfg, tmp / "raw")
    return _preprocess(tmp, "cpc_snn", override, [tmp / "raw"], "cpc_snn.data.segment_duration", "receptive field")


# ------------------------------------------------------------------------------ rows: training and models
def processed_file_corrupt(tmp):
    bad = tmp / "p.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return Case(["train", "--system", "ei_rnn", "--data", str(bad), "--out-dir", str(tmp / "model")], str(bad),
                "not a processed ei_rnn dataset", absent=[tmp / "model"])


def _processed_copy(tmp, source: Path, edit) -> Path:
    import h5py
    import shutil

    bad = tmp / "p.h5"
    shutil.copy(source, bad)
    with h5py.File(bad, "r+") as h:
        edit(h)
    return bad


def processed_inf_values(tmp, processed):
    def edit(h):
        s = h["spikes"][()]
        s[0, 0, 0] = float("inf")
        h["spikes"][...] = s

    bad = _processed_copy(tmp, processed["ei_rnn"], edit)
    return Case(["train", "--system", "ei_rnn", "--data", str(bad), "--out-dir", str(tmp / "model")], str(bad),
                "spikes has 1 NaN/Inf values", absent=[tmp / "model"])


def hdf5_external_link(tmp, processed):
    """An HDF5 link into another file (here /etc/passwd's neighbour): a reader would open a file
    nobody named. Every HDF5 reader (processed files, NWB, v7.3 .mat, pose files, GWOSC) refuses."""
    import h5py

    def edit(h):
        del h["spikes"]
        h["spikes"] = h5py.ExternalLink(str(tmp / "elsewhere.h5"), "/spikes")

    with h5py.File(tmp / "elsewhere.h5", "w") as other:
        other["spikes"] = [[[0.0]]]
    bad = _processed_copy(tmp, processed["ei_rnn"], edit)
    return Case(["train", "--system", "ei_rnn", "--data", str(bad), "--out-dir", str(tmp / "model")], str(bad),
                "HDF5 link to another file refused: spikes", absent=[tmp / "model"])


def processed_split_out_of_range(tmp, processed):
    def edit(h):
        idx = h["val_idx"][()]
        idx[-1] = 10_000
        h["val_idx"][...] = idx

    bad = _processed_copy(tmp, processed["ei_rnn"], edit)
    return Case(["train", "--system", "ei_rnn", "--data", str(bad), "--out-dir", str(tmp / "model")], str(bad),
                "val_idx must hold indices in [0, ", absent=[tmp / "model"])


def extract_other_dataset(tmp, processed):
    """A model given to extraction with another dataset (other neuron counts): refused before
    anything is written; the run's earlier weights/ and outputs/ stay as they were."""
    from neurotrain.config import validate_system
    from neurotrain.registry import entry

    cfg = validate_system("ei_rnn", copy.deepcopy(SMOKE["ei_rnn"]))
    run = tmp / "run"
    entry("ei_rnn", "train")(cfg, str(processed["ei_rnn"]), str(run / "model"))
    other_cfg = copy.deepcopy(cfg)
    other_cfg["data"]["embedded"]["n_exc"] += 3
    entry("ei_rnn", "generate")(other_cfg, tmp / "other")
    entry("ei_rnn", "preprocess")(other_cfg, [tmp / "other"], tmp / "other.h5")
    earlier = [_earlier(run / "weights" / "W_rec.npy"), _earlier(run / "outputs" / "val_model_psth.npy")]
    return Case(["extract", "--system", "ei_rnn", "--model-dir", str(run / "model"), "--data", str(tmp / "other.h5"),
                 "--out-dir", str(run)], str(tmp / "other.h5"), "are not the model's", kept=earlier)


def diverging_loss(tmp, processed):
    cfg = _config(tmp, "ring_attractor", {"model": {"tonic_e": 1e39}})  # inf drive: NaN rates, NaN loss
    model = tmp / "model"
    return Case(["train", "--system", "ring_attractor", "--config", str(cfg), "--data", str(processed["ring_attractor"]),
                 "--out-dir", str(model)], "loss diverged", "training diverged", code=3,
                absent=[model / "model_final.pt", model / "model_best.pt"], kept=[processed["ring_attractor"]])


def checkpoint_corrupt(tmp, processed):
    model = tmp / "model"
    (model / "checkpoints").mkdir(parents=True)
    (model / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    cfg = _config(tmp, "ei_rnn", {})
    return Case(["train", "--system", "ei_rnn", "--config", str(cfg), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(model)], str(model / "checkpoints" / "last.pt"), "corrupt or unreadable checkpoint",
                code=0, kept=[processed["ei_rnn"]])


def model_file_corrupt(tmp, processed):
    model = tmp / "model"
    model.mkdir()
    (model / "model_best.pt").write_bytes(b"garbage")
    run = tmp / "run"
    weights = _earlier(run / "weights" / "W_rec.npy")
    cfg = _config(tmp, "ei_rnn", {})
    return Case(["extract", "--system", "ei_rnn", "--config", str(cfg), "--model-dir", str(model), "--data",
                 str(processed["ei_rnn"]), "--out-dir", str(run)], str(model / "model_best.pt"),
                "corrupt or unreadable checkpoint", absent=[run / "outputs"], kept=[weights])


def disk_full(tmp, processed):
    """The output folder is a 64 kB tmpfs (root only): the processed file does not fit."""
    full = tmp / "full"
    full.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {r.stderr.decode().strip()}")
    earlier = _earlier(full / "earlier.h5")
    raw = tmp / "raw"
    from neurotrain.config import system_defaults
    from neurotrain.systems.ei_rnn import data as de

    de.generate_embedded(system_defaults("ei_rnn"), raw)
    out = full / "processed.h5"
    return Case(["preprocess", "--system", "ei_rnn", "--raw", str(raw), "--out", str(out)], str(out),
                "No space left on device", absent=[out], kept=[earlier])


def disk_full_checkpoint(tmp, processed):
    """The model folder is a 64 kB tmpfs (root only): the first checkpoint does not fit."""
    full = tmp / "full"
    full.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill: {r.stderr.decode().strip()}")
    model = full / "model"
    cfg = _config(tmp, "ei_rnn", {"training": {"checkpoint_every": 1}})
    return Case(["train", "--system", "ei_rnn", "--config", str(cfg), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(model)], str(model / "checkpoints"), "No space left on device",
                absent=[model / "model_best.pt", model / "model_final.pt"], kept=[processed["ei_rnn"]])


# ------------------------------------------------------------------------------ rows: every stage's inputs
def _train_on(tmp, system: str, data: Path) -> Case:
    cfg = _config(tmp, system, {})
    return Case(["train", "--system", system, "--config", str(cfg), "--data", str(data), "--out-dir", str(tmp / "model")],
                str(data), "", absent=[tmp / "model" / "model_best.pt", tmp / "model" / "model_best.npz"])


def processed_missing(tmp):
    case = _train_on(tmp, "ei_rnn", tmp / "absent.h5")
    case.needle = "processed ei_rnn dataset not found"
    return case


def processed_cebra_nan(tmp, processed):
    import h5py

    with h5py.File(processed["cebra"], "r") as h:
        first = [str(n) for n in h.attrs["session_names"]][0]

    def edit(h):
        x = h[f"sessions/{first}/spikes"][()]
        x[3, 1] = float("nan")
        h[f"sessions/{first}/spikes"][...] = x

    case = _train_on(tmp, "cebra", _processed_copy(tmp, processed["cebra"], edit))
    case.needle = f"sessions/{first}/spikes has 1 NaN/Inf values"
    return case


def processed_ring_split_code(tmp, processed):
    def edit(h):
        x = h["split"][()]
        x[0] = 7
        h["split"][...] = x

    case = _train_on(tmp, "ring_attractor", _processed_copy(tmp, processed["ring_attractor"], edit))
    case.needle = "split holds 7, not one of [0, 1, 2]"
    return case


def processed_lisbet_nan(tmp, processed):
    import h5py

    with h5py.File(processed["lisbet"], "r") as h:
        first = [str(n) for n in h.attrs["sequence_names"]][0]

    def edit(h):
        x = h[f"sequences/{first}/keypoints"][()]
        x[0, 0, 0, 0] = float("nan")
        h[f"sequences/{first}/keypoints"][...] = x

    case = _train_on(tmp, "lisbet", _processed_copy(tmp, processed["lisbet"], edit))
    case.needle = f"sequences/{first}/keypoints has 1 NaN/Inf values"
    return case


def processed_cpc_snn_label(tmp, processed):
    def edit(h):
        x = h["label"][()]
        x[0] = 5
        h["label"][...] = x

    case = _train_on(tmp, "cpc_snn", _processed_copy(tmp, processed["cpc_snn"], edit))
    case.needle = "label holds 5, not one of [0, 1]"
    return case


def raw_folder_missing(tmp):
    gone = tmp / "raw" / "embedded"
    return _preprocess(tmp, "ei_rnn", {}, [gone], gone, "file not found")


def params_not_json(tmp):
    return Case(["train", "--system", "ei_rnn", "--params", "{training: ", "--data", str(tmp / "p.h5"),
                 "--out-dir", str(tmp / "model")], "--params", "not valid JSON", absent=[tmp / "model"])


def config_systems_empty(tmp):
    return _generate_with(tmp, "systems: []\n", "should be non-empty")


def model_file_missing(tmp, processed):
    (tmp / "model").mkdir()
    return Case(["extract", "--system", "ei_rnn", "--model-dir", str(tmp / "model"), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(tmp / "run")], str(tmp / "model" / "model_best.pt"), "checkpoint not found",
                absent=[tmp / "run" / "weights", tmp / "run" / "outputs"])


def jax_model_corrupt(tmp, processed):
    model = tmp / "model"
    model.mkdir()
    (model / "model_best.npz").write_bytes(b"PK\x03\x04 not an npz")
    return Case(["extract", "--system", "cpc_snn", "--model-dir", str(model), "--data", str(processed["cpc_snn"]),
                 "--out-dir", str(tmp / "run")], str(model / "model_best.npz"), "corrupt or unreadable checkpoint",
                absent=[tmp / "run" / "weights", tmp / "run" / "outputs"])


def analyze_without_extraction(tmp, processed):
    run = tmp / "run"
    run.mkdir()
    earlier = _earlier(run / "metrics.json")
    return Case(["analyze", "--system", "ei_rnn", "--run-dir", str(run), "--data", str(processed["ei_rnn"])],
                str(run / "outputs"), "not found; run the earlier stages first", absent=[run / "metrics", run / "population"],
                kept=[earlier])


def truth_file_corrupt(tmp, processed):
    bad = tmp / "truth.npz"
    bad.write_bytes(b"not a zip")
    case = analyze_without_extraction(tmp, processed)
    case.argv += ["--truth", str(bad)]
    return case


def figures_log_corrupt(tmp):
    run = tmp / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "training_log.json").write_bytes(b'{"history": [1, 2')
    for name in ("metrics.json", "model/config.json"):
        (run / name).write_text("{}")
    return Case(["figures", "--system", "ei_rnn", "--run-dir", str(run)], str(run / "model" / "training_log.json"),
                "not valid JSON", absent=[run / "figures"])


def report_without_metrics(tmp):
    run = tmp / "run"
    run.mkdir()
    return Case(["report", "--system", "ei_rnn", "--run-dir", str(run)], str(run / "metrics.json"),
                "missing; run the earlier stages first", absent=[run / "training_report.md"])


def index_without_reports(tmp):
    (tmp / "results" / "ei_rnn" / "default").mkdir(parents=True)
    out = tmp / "results" / "report.md"
    return Case(["index", "--runs", "ei_rnn/default", "--results", str(tmp / "results"), "--out", str(out)],
                str(tmp / "results" / "ei_rnn" / "default" / "aggregate.json"),
                "missing; build this run first (rule aggregate_run)", absent=[out])


def aggregate_seed_unfinished(tmp):
    """A run pooled while one seed's chain has not finished: named as the rule passes it (relative
    to the working directory), no pooled report."""
    run = Path("results") / "ei_rnn" / "default"
    (tmp / run / "seed43").mkdir(parents=True)
    return Case(["aggregate", "--system", "ei_rnn", "--run", "default", "--seed-dirs", str(run / "seed43"),
                 "--out-dir", str(run)], str(run / "seed43" / "metrics.json"), "missing; build this replicate first",
                absent=[tmp / run / n for n in ("aggregate.json", "run_report.md", "figures")], cwd=tmp)


def calms21_not_zip(tmp):
    bad = tmp / "raw" / "task1_classic_classification.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"<html>a login page, not the archive</html>")
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    return _preprocess(tmp, "lisbet", {"data": {"source": "calms21", "calms21": {"md5": {"task1": md5}}}}, [bad], bad,
                       "not a readable zip archive")


def pose_file_not_hdf5(tmp):
    bad = tmp / "raw" / "pair.nc"
    bad.parent.mkdir()
    bad.write_bytes(b"CDF\x01 a netCDF3 file cut short")
    return _preprocess(tmp, "lisbet", {"data": {"source": "movement"}}, [bad], bad, "not a netCDF pose file")


def strain_not_hdf5(tmp):
    bad = tmp / "raw" / "H-H1_GWOSC_4KHZ_R1-1126259447-32.hdf5"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"GWF frame file, not HDF5")
    return _preprocess(tmp, "cpc_snn", _GW, [bad], bad, "cannot read GWOSC HDF5 strain file")


def calms21_json_not_utf8(tmp):
    from test_lisbet import _zip

    bad = tmp / "raw" / "task1_classic_classification.zip"
    bad.parent.mkdir()
    bad.write_bytes(_zip({"task1_classic_classification/calms21_task1_train.json": b'{"a": "\xe9\xff"}'}))
    md5 = hashlib.md5(bad.read_bytes()).hexdigest()
    return _preprocess(tmp, "lisbet", {"data": {"source": "calms21", "calms21": {"md5": {"task1": md5}}}}, [bad],
                       f"{bad}: task1_classic_classification/calms21_task1_train.json", "not valid JSON")


def mat_not_matlab(tmp):
    bad = tmp / "raw" / "export.mat"
    bad.parent.mkdir()
    bad.write_text("trial,neuron,count\n1,1,3\n")
    return _preprocess(tmp, "ei_rnn", {"data": {"source": "mat"}}, [bad], bad, "not a MATLAB .mat file")


def config_md5_not_hex(tmp):
    return _train_with(tmp, "cebra", "cebra:\n  data:\n    rat:\n      md5: {achilles: not-a-checksum}\n",
                       "cebra.data.rat.md5.achilles", "does not match")


def config_block_null(tmp):
    return _train_with(tmp, "ei_rnn", "ei_rnn:\n  training: null\n", "ei_rnn.training", "is not of type 'object'")


def config_dt_mismatch(tmp, processed):
    cfg = _config(tmp, "ei_rnn", {"model": {"dt": 10.0}})
    return Case(["train", "--system", "ei_rnn", "--config", str(cfg), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(tmp / "model")], "ei_rnn.model.dt", "does not match the data's bin width",
                absent=[tmp / "model"])


def checkpoint_other_run(tmp, processed):
    """A resume state of another run (another config, data, model or code): never resumed from."""
    from neurotrain.training.checkpoint import save_checkpoint
    from neurotrain.training.runstate import STATE_FORMAT

    model = tmp / "model"
    save_checkpoint(model / "checkpoints" / "last.pt", {"format": STATE_FORMAT, "fingerprint": "0" * 16,
                                                        "progress": {"epoch": 3}})
    cfg = _config(tmp, "ei_rnn", {})
    return Case(["train", "--system", "ei_rnn", "--config", str(cfg), "--data", str(processed["ei_rnn"]),
                 "--out-dir", str(model)], str(model / "checkpoints" / "last.pt"),
                "belongs to another config, dataset, model or code version", code=0, kept=[processed["ei_rnn"]])


def config_systems_not_list(tmp):
    return _generate_with(tmp, "systems: ei_rnn\n", "is not of type 'array'")


def raw_given_twice(tmp):
    p = _strain(tmp, seconds=32.0)
    return _preprocess(tmp, "cpc_snn", _GW, [p, p], p, "given twice")


def config_unreadable(tmp):
    case = _generate_with(tmp, "systems: [ei_rnn]\n", "Permission denied")
    Path(case.where).chmod(0)
    case.unprivileged = True
    return case


def processed_unreadable(tmp, processed):
    import shutil

    data = tmp / "ei_rnn.h5"
    shutil.copy(processed["ei_rnn"], data)
    data.chmod(0)
    case = _train_on(tmp, "ei_rnn", data)
    case.needle, case.unprivileged = "cannot read it (permission denied)", True
    return case


def out_dir_not_writable(tmp, processed):
    locked = tmp / "locked"
    locked.mkdir()
    case = _train_on(tmp, "ei_rnn", processed["ei_rnn"])
    case.argv[-1] = str(locked / "model")
    case.where, case.needle, case.unprivileged = str(locked / "model"), "Permission denied", True
    case.absent = [locked / "model"]
    locked.chmod(0o555)
    return case


CATALOGUE: dict[str, tuple[str, Callable]] = {
    "config-unknown-key": ("a key the schema does not know", config_unknown_key),
    "config-wrong-type": ("a value of the wrong type", config_wrong_type),
    "config-out-of-range": ("a value out of its range", config_out_of_range),
    "config-missing-file": ("a config file that does not exist", config_missing_file),
    "config-not-yaml": ("a config file that is not YAML", config_not_yaml),
    "config-python-tag": ("a YAML tag that would run code (`!!python/object`)", config_python_tag),
    "config-not-mapping": ("a config that is a list, not a mapping", config_not_mapping),
    "config-duplicate-key": ("a config with a key given twice (PyYAML would keep the last)", config_duplicate_key),
    "config-nan": ("`.nan` where a number is required (JSON schema admits it)", config_nan),
    "config-not-utf8": ("a config file that is not UTF-8 text", config_not_utf8),
    "unknown-system": ("an unknown system on the command line", unknown_system),
    "workflow-unknown-key": ("a misspelt key given to Snakemake", workflow_unknown_key),
    "workflow-unknown-system": ("an unknown system in `systems`", workflow_unknown_system),
    "workflow-duplicate-key": ("a key given twice in a config given to Snakemake", workflow_duplicate_key),
    "workflow-url-runs-shell": ("a download address whose file name is a shell command (`$(touch X)`)",
                                workflow_url_runs_shell),
    "config-download-name-path": ("a download name from the config that is a path (`../../evil`)",
                                  config_download_name_path),
    "config-run-id-not-plain": ("a run id that is not a plain name (`.`)", config_run_id_not_plain),
    "config-model-heads": ("model sizes that do not fit together (3 heads, emb_dim 8)", config_model_heads),
    "config-run-id-reserved": ("a run id that is one of the model folder's own files", config_run_id_reserved),
    "mat-missing": ("a `.mat` file that does not exist", mat_missing),
    "mat-truncated": ("a truncated `.mat` (v7.3)", mat_truncated),
    "mat-nan": ("NaN/Inf in the spikes of a `.mat`", mat_nan),
    "mat-missing-variable": ("a `.mat` without a required variable", mat_missing_variable),
    "mat-wrong-shape": ("variables whose shapes disagree", mat_wrong_shape),
    "mat-no-time-bins": ("a `.mat` with 0 time bins (or trials, or neurons)", mat_no_time_bins),
    "mat-overflow": ("spike counts beyond float32's range", mat_overflow),
    "download-md5-mismatch": ("a download whose md5 does not match", download_md5_mismatch),
    "download-file-url": ("a `file://` download address", download_file_url),
    "download-unreachable": ("a download that is not there (HTTP 404, not retried)", download_unreachable),
    "rat-checksum-mismatch": ("a rat recording (a pickle) with the wrong md5: never opened", rat_checksum_mismatch),
    "rat-pickle-corrupt": ("a rat recording with the right md5 that is not a joblib pickle", rat_pickle_corrupt),
    "nwb-unreadable": ("an NWB file that is not readable", nwb_unreadable),
    "sessions-nan": ("NaN/Inf in a session's behaviour", sessions_nan),
    "session-too-short": ("a session shorter than `min_session_bins`", session_too_short),
    "sessions-mismatched-lengths": ("behaviour and spikes of different lengths", sessions_mismatched_lengths),
    "shared-model-mismatched-sessions": ("a shared CEBRA model over sessions with different neuron counts",
                                         shared_model_mismatched_sessions),
    "zip-entry-escaping": ("a zip entry that would be written outside its folder", zip_entry_escaping),
    "calms21-json-truncated": ("a truncated CalMS21 JSON inside its zip", calms21_json_truncated),
    "movement-missing-keypoint": ("a pose file without one of the 7 keypoints", movement_missing_keypoint),
    "strain-all-gap": ("strain that is NaN (a data gap) throughout", strain_all_gap),
    "strain-rate-mismatch": ("strain at another sample rate than configured", strain_rate_mismatch),
    "strain-no-dataset": ("an HDF5 file without `strain/Strain`", strain_no_dataset),
    "strain-too-short": ("a strain file too short for one segment", strain_too_short),
    "strain-too-few-noise-segments": ("too few test noise segments for the quality bar's false-alarm probability",
                                      strain_too_few_noise_segments),
    "strain-dq-flag-unknown": ("a data-quality flag the file does not define", strain_dq_flag_unknown),
    "segments-shorter-than-receptive-field": ("segments shorter than the encoder's receptive field",
                                              segments_shorter_than_receptive_field),
    "processed-file-corrupt": ("a corrupt processed HDF5 given to training", processed_file_corrupt),
    "processed-inf-values": ("Inf values in a processed file (every system's reader checks)", processed_inf_values),
    "hdf5-external-link": ("an HDF5 file with a link into another file", hdf5_external_link),
    "processed-split-out-of-range": ("split indices outside the data in a processed file", processed_split_out_of_range),
    "diverging-loss": ("a loss that becomes NaN/Inf during training", diverging_loss),
    "checkpoint-corrupt": ("a corrupt resume checkpoint", checkpoint_corrupt),
    "checkpoint-stray-file": ("a stray file in the checkpoint folder (`model_epoch2 (copy).pt`)",
                              checkpoint_stray_file),
    "extract-other-dataset": ("a model extracted with another dataset (other neuron counts or sessions)",
                              extract_other_dataset),
    "model-file-corrupt": ("a corrupt model file given to extraction", model_file_corrupt),
    "disk-full": ("a full disk while writing an artifact", disk_full),
    "disk-full-checkpoint": ("a full disk while training writes a checkpoint", disk_full_checkpoint),
    "processed-missing": ("a processed file that does not exist", processed_missing),
    "processed-cebra-nan": ("NaN spikes in a processed CEBRA session", processed_cebra_nan),
    "processed-ring-split-code": ("a split code other than train/validation/test (ring attractor)",
                                  processed_ring_split_code),
    "processed-lisbet-nan": ("NaN keypoints in a processed LISBET sequence", processed_lisbet_nan),
    "processed-cpc-snn-label": ("a label other than 0/1 in processed strain segments", processed_cpc_snn_label),
    "raw-folder-missing": ("a raw dataset folder that does not exist", raw_folder_missing),
    "params-not-json": ("a `--params` slice that is not JSON", params_not_json),
    "config-systems-empty": ("an empty `systems` list", config_systems_empty),
    "model-file-missing": ("extraction without a trained model", model_file_missing),
    "jax-model-corrupt": ("a corrupt JAX model file given to extraction", jax_model_corrupt),
    "analyze-without-extraction": ("analysis before extraction (no outputs/)", analyze_without_extraction),
    "truth-file-corrupt": ("a corrupt ground-truth file given to analysis", truth_file_corrupt),
    "figures-log-corrupt": ("a training log that is not JSON, given to the figures", figures_log_corrupt),
    "report-without-metrics": ("a report before analysis (no metrics.json)", report_without_metrics),
    "index-without-reports": ("the project report before a system's chain ran", index_without_reports),
    "aggregate-seed-unfinished": ("a run's seeds pooled before one of them finished", aggregate_seed_unfinished),
    "calms21-not-zip": ("a CalMS21 download that is not a zip (an HTML page)", calms21_not_zip),
    "pose-file-not-hdf5": ("a pose file that is not netCDF (a netCDF3 header cut short)", pose_file_not_hdf5),
    "calms21-json-not-utf8": ("a CalMS21 JSON that is not UTF-8 text", calms21_json_not_utf8),
    "mat-not-matlab": ("a `.mat` that is a CSV file", mat_not_matlab),
    "config-md5-not-hex": ("a published md5 in the config that is not 32 hex digits", config_md5_not_hex),
    "config-block-null": ("a config block set to null", config_block_null),
    "config-dt-mismatch": ("a model time step that is not the data's bin width", config_dt_mismatch),
    "checkpoint-other-run": ("a resume state of another run (config, data, model or code)", checkpoint_other_run),
    "config-systems-not-list": ("`systems` given as one name, not a list", config_systems_not_list),
    "strain-not-hdf5": ("a strain file that is not HDF5 (a GWF frame)", strain_not_hdf5),
    "raw-given-twice": ("one raw file given twice (every sample would count twice)", raw_given_twice),
    "config-unreadable": ("a config file the user may not read", config_unreadable),
    "processed-unreadable": ("a processed file the user may not read", processed_unreadable),
    "out-dir-not-writable": ("an output folder in a folder the user may not write", out_dir_not_writable),
}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Smoke-size processed datasets for the rows that need a valid one."""
    from neurotrain.config import validate_system
    from neurotrain.registry import entry

    d = tmp_path_factory.mktemp("processed")
    out = {}
    for system in ("ei_rnn", "cebra", "ring_attractor", "lisbet", "cpc_snn"):
        cfg = validate_system(system, copy.deepcopy(SMOKE[system]))
        entry(system, "generate")(cfg, d / system)
        entry(system, "preprocess")(cfg, [d / system], d / f"{system}.h5")
        out[system] = d / f"{system}.h5"
    return out


@pytest.fixture(scope="module")
def server():
    s = LoopbackServer({})
    yield s
    s.close()


def _relative(text: str, tmp: Path) -> str:
    """``text`` with the paths under ``tmp`` written relative to it."""
    return "." if text == str(tmp) else text.replace(str(tmp) + os.sep, "")


def _from(case: Case, tmp: Path) -> Case:
    """The case as Snakemake's rules run it: from the working directory, with relative paths (the
    message must then name the file as it was given). Cases with a working directory of their own
    are left as they are."""
    if case.cwd is not None or case.argv[0] == "snakemake":
        return case
    case.argv = [_relative(a, tmp) for a in case.argv]
    case.where = _relative(case.where, tmp)
    case.cwd = tmp
    return case


def _run(case: Case) -> subprocess.CompletedProcess:
    if case.argv[0] == "snakemake":
        cmd = case.argv[:1] + ["--cores", "1"] + case.argv[1:]
    else:
        cmd = [NEUROTRAIN, *case.argv]
    if case.unprivileged and os.geteuid() == 0:  # root reads and writes anything: drop that power
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=case.cwd, env=snakemake_env(), timeout=600)


@pytest.mark.parametrize("row", list(CATALOGUE))
def test_bad_input(row, tmp_path, request):
    make = CATALOGUE[row][1]
    args = [request.getfixturevalue(n) for n in make.__code__.co_varnames[1:make.__code__.co_argcount]]
    case = _from(make(tmp_path, *args), tmp_path)
    before = {p: p.read_bytes() for p in case.kept}
    try:
        r = _run(case)
        text = r.stdout + r.stderr if case.stream == "both" else r.stderr
        assert r.returncode == case.code, \
            f"{row}: exit {r.returncode}, expected {case.code}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        assert case.where in text and case.needle in text, \
            f"{row}: message does not name {case.where!r} / {case.needle!r}:\n{text[-2000:]}"
        if case.argv[0] != "snakemake":
            assert "Traceback" not in r.stderr, r.stderr
        for p in case.absent:
            assert not p.exists(), f"{row}: partial output {p} was left"
        for p, content in before.items():
            assert p.read_bytes() == content, f"{row}: the earlier result {p} was changed"
        for folder in {p.parent for p in case.absent + case.kept if p.parent.is_dir()}:
            leftovers = [q.name for q in folder.iterdir() if q.name.startswith(".") and q.name.endswith(".tmp")]
            assert not leftovers, f"{row}: temporary files left in {folder}: {leftovers}"
    finally:
        if row.startswith("disk-full"):
            subprocess.run(["umount", str(tmp_path / "full")], capture_output=True)


def test_docs_list_every_row():
    doc = (ROOT / "docs" / "data-formats.md").read_text()
    table = doc.split("## Bad input")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M)
    assert rows == list(CATALOGUE), "the bad-input table of docs/data-formats.md and CATALOGUE differ"
    assert len(rows) >= 25

"""CEBRA data: the embedded multi-session dataset, the rat hippocampus recordings, NWB sessions.

Processed HDF5 (``data/processed/cebra.h5``), one group per session under ``sessions/``, in
the order of the ``session_names`` attribute:

=====================================  ===============  ==========================================
dataset                                shape            content
=====================================  ===============  ==========================================
sessions/<name>/spikes                 [T, N_s] f32     spike counts per bin (N_s neurons)
sessions/<name>/behavior               [T, B] f32       continuous behaviour labels
sessions/<name>/latent (embedded)      [T, 2] f32       the true latent (u, 2 sin u) + noise
sessions/<name>/train_idx, test_idx    int64            time split: first part trains, last tests,
                                                        ``data.split_gap`` bins apart
=====================================  ===============  ==========================================

Attributes: ``dt`` (s), ``session_names``, ``behavior_names`` (``data.behavior_columns``),
``behavior_discrete`` (bool per column, ``data.discrete_columns``), ``source``.
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import h5py
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, read_hdf5
from neurotrain.nwb import canonical_unit, check_observed, read_nwb
from neurotrain.splits import block_split
from neurotrain.fetch import read_verified

log = logging.getLogger("neurotrain.systems.cebra.data")

RAT_FILE = "{name}.jl.gz"


# --------------------------------------------------------------------------- embedded
def latent_walk(n_time: int, rng: np.random.Generator, speed: float) -> np.ndarray:
    """Behaviour u(t) in [0, 2 pi]: a reflecting random walk with smooth velocity, [T]."""
    u = np.empty(n_time)
    u[0] = rng.uniform(0, 2 * np.pi)
    v = 0.0
    for t in range(1, n_time):
        v = 0.95 * v + 0.05 * rng.normal(0.0, speed)
        x = u[t - 1] + v
        if x < 0:
            x, v = -x, -v
        if x > 2 * np.pi:
            x, v = 4 * np.pi - x, -v
        u[t] = x
    return u


def mixing_rates(z: np.ndarray, n_neurons: int, rng: np.random.Generator, hidden: int, rate_scale: float) -> np.ndarray:
    """A random nonlinear mixing of the latent z [T, 2] to rates [T, n_neurons] (counts/bin):
    leaky-ReLU layer then softplus, with the session's own random weights."""
    w1 = rng.normal(0.0, 1.0, (z.shape[1], hidden))
    b1 = rng.normal(0.0, 1.0, hidden)
    w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), (hidden, n_neurons))
    b2 = rng.normal(-1.0, 0.5, n_neurons)
    h = z @ w1 + b1
    h = np.where(h > 0, h, 0.2 * h)
    return np.logaddexp(0.0, h @ w2 + b2) * rate_scale


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    """Stage ``generate``: one ``session<i>.npz`` per session (spikes [T, N_s], behavior [T, 1]
    = u, latent [T, 2], rates [T, N_s]) into ``out_dir``.

    Every session ("animal") has its own trajectory, neuron count and mixing; all share the
    latent z = (u, 2 sin u) + noise (CEBRA's synthetic benchmark), with Poisson spikes.
    """
    e = cfg["data"]["embedded"]
    rng = np.random.default_rng(e["seed"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(e["n_neurons"]):
        u = latent_walk(e["n_time"], rng, e["speed"])
        z = np.stack([u, 2 * np.sin(u)], 1) + rng.normal(0.0, e["latent_noise"], (len(u), 2))
        rates = mixing_rates(z, n, rng, e["hidden_units"], e["rate_scale"])
        spikes = rng.poisson(rates)
        with atomic_path(out_dir / f"session{i}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, spikes=spikes.astype(np.float32), behavior=u[:, None].astype(np.float32),
                         latent=z.astype(np.float32), rates=rates.astype(np.float32), dt=np.float64(e["dt"]))


# --------------------------------------------------------------------------- rat hippocampus
def load_rat(path: Path, md5: str) -> dict:
    """One rat's recording after its checksum matched: spikes [T, N], position [T, 3]."""
    raw = read_verified(path, md5)  # a pickle: unpickle exactly the verified bytes, never the file again
    import joblib

    try:
        d = joblib.load(io.BytesIO(gzip.decompress(raw)))
    except Exception as exc:  # noqa: BLE001 - gzip, pickle and joblib raise many types
        raise NeurotrainError(path, f"corrupt joblib file ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(d, dict) or "spikes" not in d or "position" not in d:
        raise NeurotrainError(path, "expected a dict with 'spikes' and 'position'")
    return {"spikes": np.asarray(d["spikes"], np.float32), "behavior": np.asarray(d["position"], np.float32)}


# --------------------------------------------------------------------------- NWB
def load_nwb(path: Path, cfg: dict, dt: float, discrete_of=lambda width: frozenset()) -> dict:
    """A session from NWB (``cfg`` is ``data.nwb``): ``spikes`` [T, N] float32, the spike times
    (s) of each of the N units of the Units table counted in bins of ``dt`` s; ``behavior``
    [T, B] float32, the time series named ``cfg['behavior']`` in its declared unit (``data *
    conversion + offset``), interpolated linearly to the bin centres (the columns in
    ``discrete_of(number of columns)``,
    flags and categories: the last sample at or before each centre); ``behavior_unit``, that
    unit as the file spells it. The bins span the behaviour's first to last timed sample; spikes
    outside are not counted (the log says how many).

    The rules of :mod:`neurotrain.nwb` apply: samples with NaN timestamps (dropped frames) or a
    NaN value (tracking lost) are dropped and logged, and the behaviour is interpolated across
    the gap they leave; timestamps that do not increase are refused. Raises NeurotrainError
    naming the file (unreadable, no such series (the names it has are listed), no Units table,
    no spike inside the behaviour's span: another time base, a unit not observed over the span
    (``obs_intervals``)) or ``<file>: <series>`` (bad timestamps or shape, no finite sample).
    """
    s, units = read_nwb(path, cfg["behavior"], "cebra.data.nwb.behavior", label="behaviour time series", spikes=True)
    times, values = s.times, s.values
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise NeurotrainError(s.where, f"behaviour must be [n] or [n, B] per sample, got shape {values.shape}")
    ok = np.isfinite(values).all(1)
    if ok.sum() < 2:
        raise NeurotrainError(s.where, f"has {int(ok.sum())} samples with finite values; need at least two")
    if not ok.all():
        log.warning("%s: %d sample(s) with a NaN value dropped (tracking lost); behaviour interpolated across the "
                    "gaps", s.where, int((~ok).sum()))
        times, values = times[ok], values[ok]
    edges = np.arange(times[0], times[-1] + dt / 2, dt)
    if len(edges) < 2:
        raise NeurotrainError(s.where, f"spans {times[-1] - times[0]:.6g} s, less than one bin of {dt} s")
    centres = edges[:-1] + dt / 2
    check_observed(units, path, edges[0], edges[-1], dt)
    counts = [np.histogram(t, edges)[0] for t in units.spike_times]
    total = sum(len(t) for t in units.spike_times)
    inside = int(sum(c.sum() for c in counts))
    if total and inside < 0.1 * total:  # a millisecond time base leaves a few early spikes inside, not none
        first = min(t.min() for t in units.spike_times if len(t))
        last = max(t.max() for t in units.spike_times if len(t))
        raise NeurotrainError(path, f"{total - inside} of {total} spike times of the Units table ({first:.6g}-"
                                    f"{last:.6g} s) fall outside the span of {s.name!r} ({edges[0]:.6g}-"
                                    f"{edges[-1]:.6g} s): not one time base (spike times must be in seconds)")
    if inside < total:
        log.info("%s: %d of %d spikes lie outside the span of %r (%.6g-%.6g s) and are not counted",
                 path, total - inside, total, s.name, edges[0], edges[-1])
    spikes = np.stack(counts, 1).astype(np.float32)
    last = np.clip(np.searchsorted(times, centres, side="right") - 1, 0, len(times) - 1)
    discrete = discrete_of(values.shape[1])
    behavior = np.stack([values[last, j] if j in discrete else np.interp(centres, times, values[:, j])
                         for j in range(values.shape[1])], 1)
    return {"spikes": spikes, "behavior": behavior.astype(np.float32), "behavior_unit": s.unit}


# --------------------------------------------------------------------------- preprocess
def _check_session(name: str, s: dict, where, min_length: int, test_fraction: float, gap: int = 0) -> None:
    sp, be = s["spikes"], s["behavior"]
    if sp.ndim != 2:
        raise NeurotrainError(where, f"session {name}: spikes must be [T, N], got shape {sp.shape}")
    if be.ndim != 2 or be.shape[0] != sp.shape[0]:
        raise NeurotrainError(where, f"session {name}: behaviour has shape {be.shape}, expected [{sp.shape[0]}, B] to match spikes {sp.shape}")
    for key in ("spikes", "behavior"):
        bad = int(np.size(s[key]) - np.isfinite(s[key]).sum())
        if bad:
            raise NeurotrainError(where, f"session {name}: {key} has {bad} NaN/Inf values")
    if sp.shape[0] < min_length + gap:
        raise NeurotrainError(where, f"session {name}: {sp.shape[0]} time bins, shorter than the minimum {min_length} "
                                     f"and the {gap}-bin gap between training and held-out parts (the model's receptive "
                                     "field and a train/test split)")
    n_test = int(round(sp.shape[0] * test_fraction))  # as splits.block_split counts it
    if n_test < 10:
        raise NeurotrainError(where, f"session {name}: test_fraction leaves {n_test} held-out bins (need at least 10)")


def read_sessions(cfg: dict, raw: list[Path]) -> tuple[list[str], list[dict], float]:
    """Sessions from the configured source: names, dicts (spikes, behavior[, latent]), dt."""
    d = cfg["data"]
    if d["source"] == "embedded":
        folder = Path(raw[0])
        files = sorted((p for p in folder.glob("session*.npz") if p.stem.removeprefix("session").isdigit()),
                       key=lambda p: int(p.stem.removeprefix("session")))
        if not files:
            raise NeurotrainError(folder, "no session<i>.npz files (run the generate stage)")
        sessions = []
        for f in files:
            try:
                with np.load(f, allow_pickle=False) as z:
                    sessions.append({k: z[k] for k in ("spikes", "behavior", "latent")})
                    dt = float(z["dt"])
            except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many types
                raise NeurotrainError(f, f"corrupt or incomplete session file ({exc.__class__.__name__}: {exc})") from None
        return [f.stem for f in files], sessions, dt
    if d["source"] == "rat":
        files = {Path(p).name.removesuffix(".jl.gz"): Path(p) for p in raw}
        names = d["rat"]["names"]
        missing = [n for n in names if n not in files]
        if missing:
            raise NeurotrainError(", ".join(map(str, raw)), f"no download for {', '.join(missing)}")
        no_md5 = [n for n in names if n not in d["rat"]["md5"]]
        if no_md5:
            raise NeurotrainError(f"config key cebra.data.rat.md5.{no_md5[0]}", "no checksum for this rat")
        return names, [load_rat(files[n], d["rat"]["md5"][n]) for n in names], 0.025
    paths = [Path(p) for p in raw]
    stems = [p.stem for p in paths]
    dup = sorted({x for x in stems if stems.count(x) > 1})
    if dup:
        raise NeurotrainError(", ".join(map(str, raw)), f"two NWB files share the session name {dup[0]!r} (file stem)")
    # which columns are flags or categories: the same rule as preprocessing's (behavior_columns)
    sessions = [load_nwb(p, d["nwb"], d["nwb"]["bin_size"],
                         lambda width: frozenset(np.flatnonzero(behavior_columns(d, width)[1]).tolist()))
                for p in paths]
    # one behaviour variable in one unit across sessions (decoding and consistency compare them)
    units = [s.pop("behavior_unit") for s in sessions]
    for p, u in zip(paths[1:], units[1:]):
        if canonical_unit(u) != canonical_unit(units[0]):
            raise NeurotrainError(f"{p}: {d['nwb']['behavior']}", f"behaviour declared in {u!r}, but in {units[0]!r} "
                                                                 f"in {paths[0]}: sessions must share one unit")
    return stems, sessions, d["nwb"]["bin_size"]


SOURCE_COLUMNS = {"embedded": (["u"], []), "rat": (["position", "right", "left"], ["right", "left"])}


def behavior_columns(d: dict, width: int) -> tuple[list[str], list[bool]]:
    """(column names, discrete flags) of the behaviour: ``data.behavior_columns`` and
    ``data.discrete_columns``, or the source's own (:data:`SOURCE_COLUMNS`; NWB: the series'
    name). Raises NeurotrainError naming the key when they do not fit ``width`` columns."""
    own, own_discrete = SOURCE_COLUMNS.get(d["source"], (None, []))
    if own is None:
        name = d["nwb"]["behavior"].rsplit("/", 1)[-1]
        own = [name] if width == 1 else [f"{name}_{j}" for j in range(width)]
    names = list(d["behavior_columns"] or own)
    discrete = list(d["discrete_columns"] if d["discrete_columns"] is not None else
                    [c for c in own_discrete if c in names])
    if len(names) != width:
        raise NeurotrainError("config key cebra.data.behavior_columns",
                              f"{len(names)} columns ({', '.join(names)}), but the sessions' behaviour has {width}; "
                              "name each column of the files")
    unknown = [c for c in discrete if c not in names]
    if unknown:
        raise NeurotrainError("config key cebra.data.discrete_columns", f"{', '.join(unknown)} not among the behaviour "
                                                                        f"columns ({', '.join(names)})")
    return names, [c in discrete for c in names]


def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    """Stage ``preprocess``: check every session and write the processed HDF5."""
    raw = [Path(p) for p in ([raw] if isinstance(raw, (str, Path)) else raw)]
    names, sessions, dt = read_sessions(cfg, raw)
    d = cfg["data"]
    min_length = max(d["min_session_bins"], 10)
    where = raw[0] if len(raw) == 1 else ", ".join(map(str, raw))
    files = dict(zip(names, raw)) if d["source"] == "nwb" else {}  # an NWB session is its file
    for name, s in zip(names, sessions):
        _check_session(name, s, files.get(name, where), min_length, d["test_fraction"], d["split_gap"])
    n_beh = {s["behavior"].shape[1] for s in sessions}
    if len(n_beh) != 1:
        raise NeurotrainError(where, f"sessions have different behaviour dimensions {sorted(n_beh)}")
    columns, discrete = behavior_columns(d, n_beh.pop())
    for name, s in zip(names, sessions):
        for j in np.flatnonzero(discrete):
            v = s["behavior"][:, j]
            if not np.array_equal(v, np.round(v)):
                raise NeurotrainError(files.get(name, where), f"session {name}: discrete behaviour column "
                                                               f"{columns[j]!r} holds non-integer values "
                                                               "(config key cebra.data.discrete_columns)")
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as fh:
            for name, s in zip(names, sessions):
                g = fh.create_group(f"sessions/{name}")
                for key in ("spikes", "behavior", "latent"):
                    if key in s:
                        g.create_dataset(key, data=np.asarray(s[key], np.float32))
                # contiguous parts, split_gap bins apart: no window of the training part reaches the held-out one
                split = block_split(np.arange(s["spikes"].shape[0]), 1, 0.0, d["test_fraction"],
                                    files.get(name, where), f"time bins of session {name}", gap=d["split_gap"],
                                    unit="bins")
                g.create_dataset("train_idx", data=np.flatnonzero(split == 0).astype(np.int64))
                g.create_dataset("test_idx", data=np.flatnonzero(split == 2).astype(np.int64))
            fh.attrs["dt"] = dt
            fh.attrs["session_names"] = names
            fh.attrs["behavior_names"] = columns
            fh.attrs["behavior_discrete"] = np.asarray(discrete, bool)
            fh.attrs["source"] = d["source"]
    log.info("preprocessed %d sessions: %s", len(names), ", ".join(f"{n} {s['spikes'].shape}" for n, s in zip(names, sessions)))


def load_processed(path: str | Path) -> dict:
    """``{"names": [...], "dt": float, "sessions": [dict of arrays, ...], "source": str}``."""
    def read(fh):
        names = [str(n) for n in fh.attrs["session_names"]]
        sessions = [{k: np.asarray(v[()]) for k, v in fh[f"sessions/{n}"].items()} for n in names]
        width = sessions[0]["behavior"].shape[1] if sessions else 0
        columns = [str(c) for c in fh.attrs.get("behavior_names", [f"behavior_{j}" for j in range(width)])]
        discrete = [bool(x) for x in fh.attrs.get("behavior_discrete", [False] * width)]
        return {"names": names, "dt": float(fh.attrs["dt"]), "sessions": sessions, "source": str(fh.attrs["source"]),
                "behavior_names": columns, "behavior_discrete": discrete}

    out = read_hdf5(path, read, "processed cebra dataset")
    for name, s in zip(out["names"], out["sessions"]):
        n = len(s["spikes"])
        check_arrays(path, {f"sessions/{name}/{k}": v for k, v in s.items()},
                     finite=(f"sessions/{name}/spikes", f"sessions/{name}/behavior"),
                     indices={f"sessions/{name}/{k}": n for k in ("train_idx", "test_idx") if k in s})
    return out

"""Ring-attractor data: embedded head-direction trajectories, head direction from NWB, the
processed HDF5.

Embedded generator (``data/raw/ring_attractor/embedded/trajectories.npz``): angular velocity is
an Ornstein-Uhlenbeck process (``omega_sd_deg`` deg/s stationary SD, correlation time
``omega_tau`` s); head direction is its integral from a uniform random start; the landmark
("light") is visible for the first ``cue_duration`` s, then darkness and light alternate with
exponential durations (means ``dark_mean`` and ``light_mean`` s). The true direction is the
ground truth the network is scored against.

NWB (a user's recording, or one fetched with its md5): the head direction is the
``TimeSeries``/``SpatialSeries`` named ``data.nwb.series``, read in its declared units
(``conversion``, ``offset``) which must be the config's (radians, or degrees with
``data.nwb.degrees: true``), resampled to ``dt`` by circular interpolation and cut into
segments of the trajectory length. A recording has no darkness: the light schedule is drawn as
for the embedded data (the network must integrate the animal's own angular velocity between
landmark fixes).

Processed HDF5 (``data/processed/ring_attractor.h5``):

==========  =================  ============================================================
dataset     shape              content
==========  =================  ============================================================
omega       [n, T] float32     angular velocity (rad/s)
theta       [n, T] float32     true head direction (rad, wrapped to [-pi, pi))
light       [n, T] float32     1 where the landmark is visible
split       [n] int8           0 train, 1 validation, 2 test (held out)
==========  =================  ============================================================

Attributes: ``dt`` (s), ``source``, ``source_sha256``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, read_hdf5, sha256_file
from neurotrain.fetch import verify_md5
from neurotrain.nwb import UNDECLARED, canonical_unit, read_nwb
from neurotrain.splits import block_split, random_split

log = logging.getLogger("neurotrain.systems.ring_attractor.data")

TRAJ_FILE = "trajectories.npz"


def wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def light_schedule(n: int, T: int, dt: float, cue: float, dark_mean: float, light_mean: float,
                   rng: np.random.Generator) -> np.ndarray:
    """[n, T] landmark visibility: on for ``cue`` s, then alternating dark/light periods."""
    light = np.zeros((n, T), np.float32)
    n_cue = max(1, int(round(cue / dt)))
    for i in range(n):
        light[i, :n_cue] = 1
        t, on = n_cue, False
        while t < T:
            dur = max(1, int(round(rng.exponential(light_mean if on else dark_mean) / dt)))
            light[i, t:t + dur] = float(on)
            t += dur
            on = not on
    return light


def simulate_trajectories(e: dict, rng: np.random.Generator) -> dict:
    """Angular-velocity random walks and their head directions; ``e`` is ``data.embedded``."""
    n, dt = e["n_trajectories"], e["dt"]
    T = int(round(e["duration"] / dt))
    sd = np.deg2rad(e["omega_sd_deg"])
    a = dt / e["omega_tau"]
    omega = np.empty((n, T))
    omega[:, 0] = rng.normal(0.0, sd, n)
    for t in range(1, T):
        omega[:, t] = omega[:, t - 1] * (1 - a) + sd * np.sqrt(2 * a) * rng.normal(size=n)
    theta0 = rng.uniform(-np.pi, np.pi, n)
    theta = wrap(theta0[:, None] + np.cumsum(omega, 1) * dt - omega[:, :1] * dt)
    light = light_schedule(n, T, dt, e["cue_duration"], e["dark_mean"], e["light_mean"], rng)
    return {"omega": omega.astype(np.float32), "theta": theta.astype(np.float32), "light": light}


def make_split(n: int, val_fraction: float, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    return random_split(n, val_fraction, test_fraction, rng, "config key ring_attractor.data", "trajectories")


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    """Stage ``generate``: ``trajectories.npz`` (omega, theta, light, dt) into ``out_dir``."""
    e = cfg["data"]["embedded"]
    rng = np.random.default_rng(e["seed"])
    tr = simulate_trajectories(e, rng)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / TRAJ_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **tr, dt=np.float64(e["dt"]))


# --------------------------------------------------------------------------- NWB
ANGLE_KEY = "ring_attractor.data.nwb.degrees"


def read_nwb_direction(path: Path, series: str, degrees: bool) -> tuple[np.ndarray, np.ndarray]:
    """(times [n] s, head direction [n] rad) from the named series of an NWB file.

    The series is read in its declared units (``data * conversion + offset``) on its own
    timestamps, by the rules of :mod:`neurotrain.nwb` (samples with NaN timestamps dropped and
    logged, timestamps that do not increase refused); samples with a NaN angle (tracking lost)
    are dropped too, so that both leave gaps (``data.nwb.max_gap`` decides which split the
    recording). The declared unit must be the config's: radians, or degrees with
    ``data.nwb.degrees: true``; a series that declares no unit (or a ``SpatialSeries`` left at
    pynwb's default ``'meters'``) is read in the config's unit, with a warning.

    Raises NeurotrainError naming the file (unreadable, no such series) or ``<file>: <series>``
    (a unit that contradicts ``data.nwb.degrees`` or is no angle, not one angle per sample,
    bad timestamps, no finite sample).
    """
    s, _ = read_nwb(path, series, "ring_attractor.data.nwb.series")
    expected = "degrees" if degrees else "radians"
    declared = canonical_unit(s.unit)
    if declared in ("radians", "degrees"):
        if declared != expected:
            raise NeurotrainError(s.where, f"declared unit {s.unit!r} contradicts config key {ANGLE_KEY} "
                                           f"({str(degrees).lower()}: {expected})")
    elif declared in UNDECLARED or (declared == "meters" and s.kind == "SpatialSeries"):
        log.warning("%s: declared unit %r is no angle unit (it says nothing about the angle); read as %s, "
                    "as config key %s says", s.where, s.unit, expected, ANGLE_KEY)
    else:
        raise NeurotrainError(s.where, f"declared unit {s.unit!r} is not an angle (radians or degrees, "
                                       f"config key {ANGLE_KEY})")
    values = s.values
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise NeurotrainError(s.where, f"must be one angle per sample, got shape {values.shape}")
    ok = np.isfinite(values)
    if not ok.any():
        raise NeurotrainError(s.where, "has no finite samples")
    if not ok.all():
        log.warning("%s: %d sample(s) with a NaN angle dropped (tracking lost)", s.where, int((~ok).sum()))
    times, values = s.times[ok], values[ok]
    if not degrees:
        _refuse_degrees_as_radians(s.where, times, values)
    return times, np.deg2rad(values) if degrees else values


# Head turns of rodents and flies stay far below this (saccades peak near 1000-2000 deg/s): a
# series whose typical speed read in radians exceeds it holds degrees.
MAX_PLAUSIBLE_SPEED = np.deg2rad(3000.0)  # rad/s


def _refuse_degrees_as_radians(where: str, times: np.ndarray, values: np.ndarray) -> None:
    """Refuse an angle series read as radians that holds degrees, whatever its declared unit
    says: a radian angle, wrapped or unwrapped, never moves by more than a turn and a half
    between two samples (degrees wrapped at 360 do), and its 90th-percentile speed over 0.1 s
    stays below :data:`MAX_PLAUSIBLE_SPEED` (3000 deg/s)."""
    if len(values) < 2:
        return
    jump = float(np.abs(np.diff(values)).max())
    k = max(1, int(round(0.1 / float(np.median(np.diff(times)))))) if times[-1] > times[0] else 1
    k = min(k, len(values) - 1)  # speed over about 0.1 s, so that tracking jitter is not counted
    dt = times[k:] - times[:-k]
    speed = np.abs(values[k:] - values[:-k])[dt > 0] / dt[dt > 0]
    fast = float(np.percentile(speed, 90)) if len(speed) else 0.0
    if jump > 3 * np.pi or fast > MAX_PLAUSIBLE_SPEED:
        why = (f"jumps by {jump:.3g} between two samples (more than a turn and a half)" if jump > 3 * np.pi else
               f"would turn at {np.rad2deg(fast):.0f} deg/s or faster for a tenth of the recording")
        raise NeurotrainError(where, f"read as radians, the angle {why}: the values look like degrees; set "
                                     f"config key {ANGLE_KEY}: true (or declare unit='degrees' in the file)")


def smooth_direction(theta_u: np.ndarray, dt: float, window: float) -> tuple[np.ndarray, np.ndarray]:
    """(angle [n] rad, angular velocity [n] rad/s) of an unwrapped angle sampled every ``dt`` s,
    both from one Savitzky-Golay filter (polynomial order 2, ``window`` s; scipy.signal.savgol_filter),
    so that tracking jitter is not differentiated into spurious velocity. ``window`` 0: the raw
    angle and its central difference."""
    from scipy.signal import savgol_filter

    n = len(theta_u)
    w = int(round(window / dt)) | 1  # odd
    if window <= 0 or w < 5 or n < w:
        return theta_u, np.gradient(theta_u, dt) if n > 1 else np.zeros(n)
    return (savgol_filter(theta_u, w, 2, mode="interp"),
            savgol_filter(theta_u, w, 2, deriv=1, delta=dt, mode="interp"))


def gap_free_stretches(times: np.ndarray, angle: np.ndarray, dt: float, nwb: dict):
    """(grid [n] s, angle [n] rad unwrapped, angular velocity [n] rad/s) of each stretch of a
    tracked angle without a gap longer than ``nwb["max_gap"]``: resampled to ``dt`` (the unwrapped
    angle interpolated linearly, gaps never bridged), smoothed and differentiated with
    :func:`smooth_direction` (``nwb["velocity_window"]``). Stretches of one sample are skipped."""
    un = np.unwrap(angle)
    cuts = np.flatnonzero(np.diff(times) > nwb["max_gap"]) + 1
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(times)]):
        if b - a < 2:
            continue
        grid = np.arange(times[a], times[b - 1] + 1e-12, dt)
        th, om = smooth_direction(np.interp(grid, times[a:b], un[a:b]), dt, nwb["velocity_window"])
        yield grid, th, om


def nwb_trajectories(path: Path, cfg: dict, rng: np.random.Generator) -> dict:
    """Cut an NWB head-direction recording into trajectories of the configured length.

    The angle is resampled to ``dt`` on each gap-free stretch (gaps longer than
    ``nwb.max_gap`` are never bridged), smoothed and differentiated there
    (:func:`smooth_direction`, ``nwb.velocity_window``), and cut into consecutive trajectories.
    ``start`` [n] gives each trajectory's first sample on the recording's grid, for the split in
    time blocks."""
    d = cfg["data"]
    e, nwb = d["embedded"], d["nwb"]
    dt = e["dt"]
    T = int(round(e["duration"] / dt))
    times, angle = read_nwb_direction(path, nwb["series"], nwb["degrees"])
    thetas, omegas, starts = [], [], []
    for grid, th, om in gap_free_stretches(times, angle, dt, nwb):
        first = int(round((grid[0] - times[0]) / dt))
        for k in range(0, len(grid) - T + 1, T):
            thetas.append(th[k:k + T])
            omegas.append(om[k:k + T])
            starts.append(first + k)
    if len(starts) < 5:
        step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
        hint = ""
        if step > nwb["max_gap"]:  # every sample its own stretch: a time base other than seconds
            hint = (f"; its median sample interval, {step:.4g} s, is longer than config key "
                    f"ring_attractor.data.nwb.max_gap ({nwb['max_gap']} s): NWB timestamps are in seconds, "
                    f"are these in milliseconds?")
        elif times[-1] - times[0] < 5 * e["duration"]:
            hint = (f"; it spans {times[-1] - times[0]:.4g} s: use a longer recording or shorten config key "
                    f"ring_attractor.data.embedded.duration")
        raise NeurotrainError(path, f"recording yields {len(starts)} gap-free trajectories of {e['duration']} s; need at "
                                    f"least 5 (train, validation and test blocks with a trajectory's gap between them)"
                                    f"{hint}")
    light = light_schedule(len(starts), T, dt, e["cue_duration"], e["dark_mean"], e["light_mean"], rng)
    return {"omega": np.stack(omegas).astype(np.float32), "theta": wrap(np.stack(thetas)).astype(np.float32),
            "light": light, "start": np.asarray(starts, np.int64)}


# --------------------------------------------------------------------------- preprocess
def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    """Stage ``preprocess``: trajectories (embedded folder or NWB file) -> processed HDF5."""
    d = cfg["data"]
    raw = [Path(r) for r in (raw if isinstance(raw, (list, tuple)) else [raw])]
    rng = np.random.default_rng(d["split_seed"])
    if d["source"] == "embedded":
        f = raw[0] / TRAJ_FILE
        if not f.is_file():
            raise NeurotrainError(f, "embedded trajectories not found")
        try:
            with np.load(f, allow_pickle=False) as z:
                tr = {k: z[k] for k in ("omega", "theta", "light")}
                dt = float(z["dt"])
        except Exception as exc:  # noqa: BLE001
            raise NeurotrainError(f, f"corrupt trajectory file ({exc.__class__.__name__}: {exc})") from None
        src, sha = "embedded", sha256_file(f)
    else:
        if len(raw) != 1:
            raise NeurotrainError("config key ring_attractor.data.nwb", f"expected one NWB file, got {len(raw)}")
        if d["nwb"].get("md5"):
            verify_md5(raw[0], d["nwb"]["md5"])
        tr = nwb_trajectories(raw[0], cfg, rng)
        dt, src, sha = d["embedded"]["dt"], "nwb", sha256_file(raw[0])
        # consecutive trajectories of one recording: contiguous time blocks with a gap of one
        split = block_split(tr.pop("start"), int(round(d["embedded"]["duration"] / dt)), d["val_fraction"],
                            d["test_fraction"], "config key ring_attractor.data", "trajectories",
                            unit="samples")
        tr = {k: v[split >= 0] for k, v in tr.items()}
        split = split[split >= 0]
    where = raw[0]
    shapes = {k: v.shape for k, v in tr.items()}
    if len({s for s in shapes.values()}) != 1 or len(shapes["omega"]) != 2:
        raise NeurotrainError(where, f"omega, theta and light must share one [n, T] shape, got {shapes}")
    for k, v in tr.items():
        if not np.all(np.isfinite(v)):
            raise NeurotrainError(where, f"{k} has {int(np.size(v) - np.isfinite(v).sum())} NaN/Inf values")
    if src == "embedded":  # independent simulated trajectories
        split = make_split(len(tr["omega"]), d["val_fraction"], d["test_fraction"], rng)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h:
            for k, v in tr.items():
                h.create_dataset(k, data=v.astype(np.float32))
            h.create_dataset("split", data=split)
            h.attrs.update(dt=dt, source=src, source_sha256=sha)


def load_processed(path: str | Path) -> dict:
    def read(h):
        out = {k: np.asarray(h[k]) for k in ("omega", "theta", "light", "split")}
        out.update(dt=float(h.attrs["dt"]), source=str(h.attrs["source"]))
        return out

    out = read_hdf5(path, read, "processed ring-attractor dataset")
    check_arrays(path, out, finite=("omega", "theta", "light"), codes={"split": (0, 1, 2)})
    return out

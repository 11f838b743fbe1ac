"""GWOSC strain for the CPC+SNN detector: read with gwpy, cut into whitened noise segments from
the stretches that are science-quality data, away from known events.

A file (HDF5 in GWOSC's layout, or GWOSC's GWF frames, through lalframe) is read with
``gwpy.timeseries.TimeSeries.read`` and its 1 Hz data-quality mask with
``gwpy.timeseries.StateVector.read`` (HDF5 ``quality/simple``: ``DQmask`` and ``DQShortnames``;
GWF: the ``..._DQMASK`` channel, bits named by :data:`GWOSC_DQ_BITS`). A sample is usable when

- every flag in ``cpc_snn.data.gwosc.dq_flags`` is set for its second (e.g. ``DATA``,
  ``CBC_CAT1``, ``CBC_CAT2``: the data exist and pass the compact-binary vetoes), and every flag
  in ``gwosc.injection_flags`` of the hardware-injection mask (``NO_CBC_HW_INJ``,
  ``NO_BURST_HW_INJ``: no simulated signal was put into the detector then),
- it is finite and not inside a run of exact zeros (a zero-filled gap),
- it lies outside ``[t - before, t + after]`` of every known event in
  ``cpc_snn.data.gwosc.events`` (name -> GPS time; by default the GWTC-1 catalogue's events), so
  a real signal is never counted as noise.

Each contiguous usable stretch long enough is decimated to ``data.sample_rate``, whitened with
its own Welch PSD (median average, robust to loud glitches), its edges dropped, and cut into
segments of ``segment_duration`` at ``gwosc.stride``. Every segment keeps its GPS start time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.systems.cpc_snn.waveforms import Whitener

log = logging.getLogger(__name__)
ZERO_RUN = 16  # this many exact zeros in a row are a zero-filled gap (real strain is never exactly 0)


@dataclass
class Strain:
    """One file's strain: ``x`` [n] float64 (strain, dimensionless), ``rate`` Hz, ``t0`` GPS s,
    ``usable`` [n] bool, ``where`` the file."""

    x: np.ndarray
    rate: float
    t0: float
    usable: np.ndarray
    where: str


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of every run of True in ``mask``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def read_strain(path: str | Path, g: dict) -> Strain:
    """Read one strain file with gwpy and mark its usable samples (module docstring). ``g`` is
    ``cpc_snn.data.gwosc``. Raises NeurotrainError naming the file: not GWOSC strain, another
    sample rate than ``g['sample_rate']``, a GWF file without a frame reader, a data-quality
    flag the file does not define, no usable sample."""
    os.environ.setdefault("LAL_DEBUG_LEVEL", "0")  # LAL's C error lines would break the one-line error rule
    from gwpy.timeseries import StateVector, TimeSeries

    from neurotrain.io import open_hdf5_checked

    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "GWOSC strain file not found")
    gwf = path.suffix.lower() == ".gwf"
    channel = (g["gwf_channel"] or _gwf_channel(path)) if gwf else None
    try:
        if gwf:
            ts = TimeSeries.read(str(path), channel, format="gwf")
        else:
            open_hdf5_checked(path, "GWOSC HDF5 strain file").close()  # no external links
            ts = TimeSeries.read(str(path), format="hdf5.gwosc")
    except NeurotrainError:
        raise
    except ImportError as exc:
        raise NeurotrainError(path, f"reading GWF frames needs a frame library ({exc}); install the "
                                    "locked lalsuite (make venv), or use GWOSC's HDF5 file") from None
    except Exception as exc:  # noqa: BLE001 - gwpy/h5py raise many kinds; name the file
        if gwf and "not found" in str(exc):
            raise NeurotrainError(path, f"no channel {channel!r} in the frame file (it has "
                                        f"{', '.join(_gwf_channels(path))}; config key "
                                        "cpc_snn.data.gwosc.gwf_channel)") from None
        kind = "GWF frame file" if gwf else "GWOSC HDF5 strain file"
        raise NeurotrainError(path, f"not a {kind} ({exc.__class__.__name__}: {exc})") from None
    x = np.asarray(ts.value, np.float64)
    rate, t0 = float(ts.sample_rate.value), float(ts.t0.value)
    if abs(rate - g["sample_rate"]) > 1e-6 * rate:
        raise NeurotrainError(path, f"sample rate {rate:g} Hz, but config key cpc_snn.data.gwosc.sample_rate is "
                                    f"{g['sample_rate']:g} Hz")
    usable = np.isfinite(x)
    zeros = ~usable | (x == 0)
    for a, b in _runs(x == 0):
        if b - a < ZERO_RUN:
            zeros[a:b] = False
    usable &= ~zeros
    if (~usable).any():
        log.info("%s: %.2f s of NaN or zero-filled strain treated as gaps", path, (~usable).sum() / rate)
    if g["dq_flags"]:
        usable &= _dq_usable(path, g["dq_flags"], t0, rate, len(x), StateVector, channel)
    if g["injection_flags"]:  # hardware injections are simulated signals in the data: never noise
        usable &= _dq_usable(path, g["injection_flags"], t0, rate, len(x), StateVector, channel, injections=True)
    t = t0 + np.arange(len(x)) / rate
    before, after = g["event_window"]
    for name, t_event in g["events"].items():
        near = (t >= t_event - before) & (t <= t_event + after)
        if near.any():
            log.info("%s: %s (GPS %.1f) in the file: %.1f s around it are not used as noise", path, name, t_event,
                     near.sum() / rate)
            usable &= ~near
    if not usable.any():
        raise NeurotrainError(path, "no usable strain (every sample is a gap, fails a data-quality flag or lies near "
                                    "a known event)")
    return Strain(x, rate, t0, usable, str(path))


# Bits of GWOSC's 1 Hz masks (gwosc.org, a dataset's "bitmask" in its API), bit 0 first. Frame
# files store only the integers; the HDF5 files carry these names in DQShortnames/InjShortnames.
GWOSC_DQ_BITS = ("DATA", "CBC_CAT1", "CBC_CAT2", "CBC_CAT3", "BURST_CAT1", "BURST_CAT2", "BURST_CAT3")
GWOSC_INJ_BITS = ("NO_CBC_HW_INJ", "NO_BURST_HW_INJ", "NO_DETCHAR_HW_INJ", "NO_CW_HW_INJ", "NO_STOCH_HW_INJ")


def _gwf_channels(path: Path) -> list[str]:
    from gwpy.io.gwf import iter_channel_names

    try:
        return sorted(iter_channel_names(str(path)))
    except Exception:  # noqa: BLE001 - only for a message
        return ["(unreadable)"]


def _gwf_channel(path: Path) -> str:
    """GWOSC's channel in a frame file named like ``H-H1_GWOSC_4KHZ_R1-1126259447-32.gwf``."""
    parts = path.stem.split("-")
    if len(parts) < 2 or "_" not in parts[1]:
        raise NeurotrainError(path, "cannot tell the frame channel from the file name; set "
                                    "cpc_snn.data.gwosc.gwf_channel")
    ifo, rest = parts[1].split("_", 1)
    return f"{ifo}:{rest.replace('_', '-', 1)}_STRAIN"


def _dq_usable(path: Path, flags: list[str], t0: float, rate: float, n: int, StateVector, strain_channel: str | None,
               injections: bool = False) -> np.ndarray:
    """[n] bool: every flag of ``flags`` is set in the file's 1 Hz mask: the data-quality mask
    ``quality/simple`` (``DQmask``, ``DQShortnames``), or with ``injections`` the hardware-injection
    mask ``quality/injections`` (``Injmask``, ``InjShortnames``, whose ``NO_*`` bits are set where
    there is no injection of that kind). In a frame file (``strain_channel`` given) the masks are
    the channels ``..._DQMASK`` and ``..._INJMASK`` beside the strain, with GWOSC's bit names."""
    gwf = strain_channel is not None
    key = "injection_flags" if injections else "dq_flags"
    group, values, names = (("quality/injections", "Injmask", "InjShortnames") if injections else
                            ("quality/simple", "DQmask", "DQShortnames"))
    what = "hardware-injection mask" if injections else "data-quality mask"
    try:
        if gwf:  # GWOSC frames: <strain channel minus _STRAIN>_DQMASK / _INJMASK, bits as GWOSC defines them
            if not strain_channel.endswith("_STRAIN"):
                raise NeurotrainError(path, f"channel {strain_channel!r} is not GWOSC's ..._STRAIN, so its {what} "
                                            f"channel is unknown; set cpc_snn.data.gwosc.{key}: []")
            group = strain_channel.removesuffix("_STRAIN") + ("_INJMASK" if injections else "_DQMASK")
            sv = StateVector.read(str(path), group, format="gwf")
            bits = list(GWOSC_INJ_BITS if injections else GWOSC_DQ_BITS)
        else:
            sv = StateVector.read(str(path), format="hdf5.gwosc", path=group, value_dataset=values, bits_dataset=names)
            bits = [str(b) for b in sv.bits]
    except NeurotrainError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise NeurotrainError(path, f"no readable {what} {group} ({exc.__class__.__name__}); set "
                                    f"cpc_snn.data.gwosc.{key}: [] to use the file without one") from None
    missing = [f for f in flags if f not in bits]
    if missing:
        raise NeurotrainError(path, f"{'injection' if injections else 'data-quality'} flag(s) {', '.join(missing)} "
                                    f"not in the file (it has {', '.join(b for b in bits if b and b != 'None')}; "
                                    f"config key cpc_snn.data.gwosc.{key})")
    need = sum(1 << bits.index(f) for f in flags)
    good_s = (np.asarray(sv.value, np.int64) & need) == need  # one value per second from sv.t0
    sec = np.floor((t0 + np.arange(n) / rate - float(sv.t0.value)) / float(sv.dt.value)).astype(np.int64)
    inside = (sec >= 0) & (sec < len(good_s))
    ok = np.zeros(n, bool)
    ok[inside] = good_s[sec[inside]]
    if not ok.all():
        log.info("%s: %.0f s fail the %s flags %s", path, (~ok).sum() / rate,
                 "hardware-injection" if injections else "data-quality", ", ".join(flags))
    return ok


def welch_asd(x: np.ndarray, fs: float, seg_s: float, f_out: np.ndarray) -> np.ndarray:
    """Amplitude spectral density [len(f_out)] (strain/sqrt(Hz)) of ``x`` sampled at ``fs`` Hz:
    Welch's method with ``seg_s``-second Hann segments overlapping by half, and the median
    rather than the mean of their periodograms (robust to glitches; as gwpy's and LIGO's
    ``median`` PSD average), interpolated at ``f_out`` Hz."""
    from scipy.signal import welch

    nper = int(round(seg_s * fs))
    f, p = welch(x, fs=fs, nperseg=nper, noverlap=nper // 2, window="hann", detrend="constant", average="median")
    return np.sqrt(np.interp(f_out, f, p))


def tukey(n: int, ramp: int) -> np.ndarray:
    """[n] window: 1 in the middle, ``ramp`` samples of half a Hann window at each end."""
    w = np.ones(n)
    if ramp > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        w[:ramp], w[n - ramp:] = r, r[::-1]
    return w


def segments(s: Strain, d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segments [m, N] whitened, their ASDs [m, N//2+1], GPS start [m] s) from the usable
    stretches of ``s``; ``d`` is ``cpc_snn.data``. Stretches too short for one segment after
    dropping the edges and estimating a PSD are skipped (logged)."""
    from scipy.signal import decimate

    g = d["gwosc"]
    fs, N = d["sample_rate"], int(round(d["segment_duration"] * d["sample_rate"]))
    q = s.rate / fs
    if abs(q - round(q)) > 1e-9 or round(q) < 1:
        raise NeurotrainError(s.where, f"sample rate {s.rate:g} Hz is not an integer multiple of "
                                       f"cpc_snn.data.sample_rate {fs:g} Hz")
    q = int(round(q))
    drop = int(round(g["edge"] * fs))
    need = max(N, int(g["psd_segment"] * fs)) + 2 * drop
    f_N = np.fft.rfftfreq(N, 1 / fs)
    segs, asds, gps = [], [], []
    for a, b in _runs(s.usable):
        x = s.x[a:b]
        if q > 1:
            if len(x) < 64 * q:
                continue
            x = decimate(x, q, ftype="fir", zero_phase=True)
        if len(x) < need:
            log.info("%s: a usable stretch of %.1f s at GPS %.1f is too short for a segment", s.where,
                     (b - a) / s.rate, s.t0 + a / s.rate)
            continue
        L = len(x)
        f_L = np.fft.rfftfreq(L, 1 / fs)
        asd_L = welch_asd(x, fs, g["psd_segment"], f_L)
        asd_L[f_L < d["f_low"] - 4] = np.inf
        white = Whitener(asd_L, L, fs, d["f_low"], d["f_high"])(x * tukey(L, drop))[drop:L - drop]
        starts = np.arange(0, len(white) - N + 1, int(round(g["stride"] * fs)))
        a_N = welch_asd(x, fs, g["psd_segment"], f_N)
        a_N[f_N < d["f_low"] - 4] = np.inf
        segs.append(np.stack([white[k:k + N] for k in starts]))
        asds.append(np.repeat(a_N[None], len(starts), 0))
        gps.append(s.t0 + a / s.rate + (drop + starts) / fs)
    if not segs:
        return np.zeros((0, N)), np.zeros((0, len(f_N))), np.zeros(0)
    return np.concatenate(segs), np.concatenate(asds), np.concatenate(gps)

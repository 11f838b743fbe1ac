"""NWB input, read the same way by every system: a named ``TimeSeries`` in the units and on the
timestamps the file declares, and the spike times of the ``Units`` table, read with pynwb after
the file was checked for links into other files (:func:`neurotrain.io.open_hdf5_checked`).

The rules every NWB reader of the package follows:

- **Values** are ``data * conversion (* channel_conversion) + offset``
  (``TimeSeries.get_data_in_units()``), in the series' declared ``unit`` (float64). A reader
  that expects a unit compares it with :func:`canonical_unit` and refuses a contradiction.
- **Time** is in seconds on the file's time base (``timestamps_reference_time``): the stored
  ``timestamps``, or ``starting_time + i / rate``. ``Units`` spike times are seconds on the same
  base (pynwb gives them so; NWB has no conversion for them).
- **A NaN timestamp** (a dropped frame) has no place in time: the sample is dropped, and the
  series reads as if the writer had left that frame out (a gap between its neighbours). The log
  says how many samples were dropped and the longest gap left. NaN spike times are dropped the
  same way.
- **Timestamps that do not increase** (after NaN samples are dropped) are refused: a block stored
  out of order, a clock reset or duplicated frames cannot be told apart from the file alone.
- **A series name that is not found** lists the series the file holds; a name held by several
  series is refused unless the configuration gives its path in the file
  (``processing/behavior/Position/position``).

Every refusal is a :class:`~neurotrain.errors.NeurotrainError` naming the file, or
``<file>: <series>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import open_hdf5_checked

log = logging.getLogger("neurotrain.nwb")

# spellings of one unit, by the name the messages use
_UNIT_NAMES = {
    "radians": ("radians", "radian", "rad", "rads"),
    "degrees": ("degrees", "degree", "deg", "degs", "°"),
    "meters": ("meters", "meter", "metres", "metre", "m"),
    "centimeters": ("centimeters", "centimeter", "centimetres", "centimetre", "cm"),
    "millimeters": ("millimeters", "millimeter", "millimetres", "millimetre", "mm"),
    "seconds": ("seconds", "second", "s", "sec"),
}
_CANONICAL = {spelling: name for name, spellings in _UNIT_NAMES.items() for spelling in spellings}
#: units that say nothing about the data (pynwb's placeholders)
UNDECLARED = frozenset({"", "n/a", "na", "none", "unknown", "no unit", "unitless", "a.u.", "au"})


def canonical_unit(unit: object) -> str:
    """A unit string in one spelling (``'rad'`` -> ``'radians'``, ``'m'`` -> ``'meters'``);
    other units are returned stripped and lower-cased."""
    text = str(unit if unit is not None else "").strip().lower()
    return _CANONICAL.get(text, text)


@dataclass
class Series:
    """One TimeSeries as read: ``times`` [n] (s, strictly increasing, finite), ``values`` [n, ...]
    float64 in ``unit`` (conversion and offset applied), ``dropped`` samples whose timestamp was NaN."""

    file: Path
    name: str
    kind: str
    unit: str
    times: np.ndarray
    values: np.ndarray
    dropped: int = 0

    @property
    def where(self) -> str:
        return f"{self.file}: {self.name}"


@dataclass
class Units:
    """The ``Units`` table: ``ids`` [N], ``spike_times`` N arrays (s, NaN dropped),
    ``obs_intervals`` N arrays [k, 2] (s) or None when the table has no such column."""

    ids: list = field(default_factory=list)
    spike_times: list = field(default_factory=list)
    obs_intervals: list | None = None


def read_nwb(path: str | Path, series: str, key: str, *, label: str = "time series",
             spikes: bool = False) -> tuple[Series, Units | None]:
    """Read the series named ``series`` (a name, or its path in the file) from the NWB file
    ``path``, and its ``Units`` table when ``spikes``.

    ``key`` is the config key that named the series (quoted in messages); ``label`` what the
    series is (``"behaviour time series"``). Returns ``(Series, Units or None)``: see the module
    docstring for the rules. Raises NeurotrainError naming ``path`` (missing, unreadable, link to
    another file, no such series, no Units table) or ``<path>: <series>`` (no numeric data,
    samples and timestamps of different lengths, a bad rate, fewer than two timed samples,
    timestamps not increasing).
    """
    from pynwb import NWBHDF5IO

    path = Path(path)
    open_hdf5_checked(path, "NWB file").close()  # no link to another file (pynwb would follow it)
    try:
        with NWBHDF5IO(str(path), "r") as nio:
            nwb = nio.read()
            ts = _find(nio, nwb, path, series, key, label)
            raw = _read_series(ts, path)
            units = _read_units(nwb, path) if spikes else None
    except NeurotrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py/hdmf raise many types for damaged files
        raise NeurotrainError(path, f"cannot read NWB file ({exc.__class__.__name__}: {exc})") from None
    return _timed(path, *raw), units


def _location(nio, obj) -> str:
    """The path of ``obj`` in the file (``processing/behavior/Position/position``)."""
    try:
        builder = nio.manager.get_builder(obj)
    except Exception:  # noqa: BLE001 - an object without a builder has no stored path
        builder = None
    return builder.path.removeprefix("root/") if builder is not None else obj.name


def _find(nio, nwb, path: Path, series: str, key: str, label: str):
    from pynwb import TimeSeries

    every = sorted(((_location(nio, o), o) for o in nwb.objects.values() if isinstance(o, TimeSeries)),
                   key=lambda lo: lo[0])
    wanted = series.strip("/")
    found = [(loc, o) for loc, o in every if loc == wanted] or [(loc, o) for loc, o in every if o.name == series]
    if not found:
        names = sorted({o.name for _, o in every})
        listing = ", ".join(repr(n) for n in names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise NeurotrainError(path, f"no {label} named {series!r} (config key {key}); the file has "
                                    + (f"these time series: {listing}" if names else "no time series"))
    if len(found) > 1:
        raise NeurotrainError(path, f"{len(found)} time series are named {series!r} "
                                    f"({', '.join(loc for loc, _ in found)}); give the path of one in config key {key}")
    return found[0][1]


def _read_series(ts, path: Path):
    """The stored arrays and attributes of ``ts`` (inside the open file)."""
    where = f"{path}: {ts.name}"
    data = ts.data
    kind = getattr(getattr(data, "dtype", None), "kind", None)
    if kind is None:
        data = np.asarray(data[:] if hasattr(data, "__getitem__") else data)
        kind = data.dtype.kind
    if kind not in "biuf":
        raise NeurotrainError(where, f"holds {getattr(data, 'dtype', type(data))} values, not numbers")
    values = np.asarray(ts.get_data_in_units(), np.float64)  # data * conversion (* channel_conversion) + offset
    time_unit = getattr(ts, "time_unit", "seconds") or "seconds"
    if canonical_unit(time_unit) != "seconds":
        raise NeurotrainError(where, f"time unit {time_unit!r}; NWB time is in seconds")
    if ts.timestamps is not None:
        times = np.asarray(ts.timestamps[:], np.float64)
        how = "timestamps"
    else:
        rate, start = ts.rate, ts.starting_time if ts.starting_time is not None else 0.0
        if rate is None or not np.isfinite(rate) or rate <= 0 or not np.isfinite(start):
            raise NeurotrainError(where, f"no timestamps, and rate {rate!r} / starting_time {start!r} give no times "
                                         "(rate must be a positive number of samples per second)")
        times = float(start) + np.arange(len(values)) / float(rate)
        how = "rate"
    return ts.name, type(ts).__name__, str(ts.unit), times, values, how


def _timed(path: Path, name: str, kind: str, unit: str, times: np.ndarray, values: np.ndarray, how: str) -> Series:
    """Checks of the timing rules (module docstring); NaN-timestamp samples dropped and logged."""
    where = f"{path}: {name}"
    if values.ndim == 0 or len(values) != len(times):
        raise NeurotrainError(where, f"has {values.shape[0] if values.ndim else 0} samples and {len(times)} {how}")
    index = np.arange(len(times))
    bad = ~np.isfinite(times)
    dropped = int(bad.sum())
    if dropped:
        if dropped > len(times) - 2:
            raise NeurotrainError(where, f"{dropped} of {len(times)} timestamps are NaN; fewer than two samples "
                                         "have a time")
        times, values, index = times[~bad], values[~bad], index[~bad]
    if len(times) < 2:
        raise NeurotrainError(where, f"has {len(times)} samples; need at least two")
    step = np.diff(times)
    back = np.flatnonzero(step <= 0)
    if back.size:
        i = back[0]
        raise NeurotrainError(where, f"timestamps are not increasing: sample {index[i + 1]} at {times[i + 1]:.6g} s "
                                     f"follows sample {index[i]} at {times[i]:.6g} s ({back.size} place{'s' if back.size > 1 else ''} in all); "
                                     "store the samples in time order")
    if dropped:
        log.warning("%s: %d sample(s) with NaN timestamps dropped (frames without a time, e.g. dropped video "
                    "frames); the series is read with gaps there, the longest between two samples now %.4g s",
                    where, dropped, float(step.max()))
    return Series(file=path, name=name, kind=kind, unit=unit, times=times, values=values, dropped=dropped)


def _read_units(nwb, path: Path) -> Units:
    units = nwb.units
    if units is None or len(units) == 0:
        raise NeurotrainError(path, "no Units table (spike times) in the NWB file")
    out = Units(ids=[int(i) for i in units.id[:]])
    if "spike_times" not in units.colnames:
        raise NeurotrainError(path, "the Units table has no spike_times column")
    nan = 0
    for i in range(len(units)):
        t = np.asarray(units.get_unit_spike_times(i), np.float64).ravel()  # seconds, the file's time base
        ok = np.isfinite(t)
        nan += int(t.size - ok.sum())
        out.spike_times.append(t[ok])
    if nan:
        log.warning("%s: %d NaN spike time(s) in the Units table dropped", path, nan)
    if "obs_intervals" in units.colnames:
        out.obs_intervals = [np.asarray(units.get_unit_obs_intervals(i), np.float64).reshape(-1, 2)
                             for i in range(len(units))]
    return out


def check_observed(units: Units, path: str | Path, start: float, stop: float, tol: float) -> None:
    """Every unit observed over ``[start, stop]`` (s) when the Units table has ``obs_intervals``
    (within ``tol`` s at either end): a count of 0 outside a unit's observation is no silence.
    Raises NeurotrainError naming ``path``, the unit's id and its observed intervals."""
    if units.obs_intervals is None:
        return
    for uid, iv in zip(units.ids, units.obs_intervals):
        iv = iv[np.argsort(iv[:, 0])] if len(iv) else iv
        reach = start + tol  # covered up to here
        for a, b in iv:
            if a <= reach:
                reach = max(reach, b + tol)
        if reach < stop:
            spans = ", ".join(f"{a:.6g}-{b:.6g} s" for a, b in iv) or "never"
            raise NeurotrainError(path, f"unit {uid} of the Units table is observed {spans} (obs_intervals), not over "
                                        f"the whole binned span {start:.6g}-{stop:.6g} s: its counts outside would "
                                        "read as silence")

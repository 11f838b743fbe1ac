"""LISBET's readers of real recordings: CalMS21 archives, streamed, and pose files read with
``movement`` (its netCDF files, DeepLabCut, SLEAP, LightningPose, NWB).

Every reader yields :class:`Recording` objects one at a time, so that preprocessing holds one
sequence in memory, never a whole archive:

- ``keypoints``: [T, 2, K, 2] float32, frames x (resident, intruder) x keypoints x (x, y), in
  the order of ``lisbet.data.keypoints`` and in arena units (pixels divided by the frame width);
- ``annotations``: [T] int16 behaviour index (:data:`BEHAVIORS`, -1 = none);
- ``fps``: the recording's own frame rate (frames per second).

CalMS21 (Sun et al. 2021, "The Multi-Agent Behavior Dataset: Mouse Dyadic Social
Interactions"): each zip holds JSON files ``{annotator group: {sequence id: {"keypoints" [T, 2
mice, 2 xy, 7 keypoints] pixels, "annotations" [T], "metadata": {"vocab": {...}}}}}``. The JSON
is parsed as a stream (``ijson``) straight from the zip, with nothing extracted to disk. A
sequence keeps its whole id as its name, with ``/`` turned into ``-`` (``task1/train/mouse001``
becomes ``task1-train-mouse001``): CalMS21's train and test sets reuse mouse ids.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.names import plain_name

log = logging.getLogger(__name__)

# CalMS21's keypoints, in its order, and its task-1 vocabulary order
CALMS21_KEYPOINTS = ("nose", "left_ear", "right_ear", "neck", "left_hip", "right_hip", "tail")
BEHAVIORS = ("attack", "investigation", "mount", "other")
MAX_EXTRACT_BYTES = 64 * 2**30  # CalMS21's largest archive unpacks to about 4 GB
SOFTWARE = ("netCDF", "DeepLabCut", "SLEAP", "LightningPose", "NWB")


@dataclass
class Recording:
    name: str
    keypoints: np.ndarray  # [T, 2, K, 2] float32
    annotations: np.ndarray  # [T] int16
    fps: float
    where: str  # the file (and archive entry) it came from, for messages
    split: int | None = None  # CalMS21's own train (0) / test (2) assignment


# --------------------------------------------------------------------------- CalMS21
class _Capped:
    """A binary stream that refuses to yield more than ``limit`` bytes (an archive entry that
    unpacks to more than it declares: a zip bomb)."""

    def __init__(self, raw: IO[bytes], limit: int, where: str):
        self.raw, self.left, self.where = raw, limit, where

    def read(self, n: int = -1) -> bytes:
        chunk = self.raw.read(n if n is not None and n >= 0 else 1 << 20)
        self.left -= len(chunk)
        if self.left < 0:
            raise NeurotrainError(self.where, "unpacks to more bytes than the archive declares")
        return chunk


def _json_sequences(stream, where: str) -> Iterator[tuple[str, object]]:
    """(sequence id, value) pairs at the second level of a CalMS21 JSON document, one at a time."""
    import ijson

    depth, name, builder = 0, None, None
    try:
        for _, event, value in ijson.parse(stream, use_float=True):
            if event in ("start_map", "start_array"):
                depth += 1
            elif event in ("end_map", "end_array"):
                depth -= 1
            if builder is not None:
                builder.event(event, value)
                if depth == 2:
                    yield name, builder.value
                    builder = None
            elif event == "map_key" and depth == 2:
                name, builder = value, ijson.ObjectBuilder()
    except ijson.JSONError as exc:
        raise NeurotrainError(where, f"not valid JSON (truncated or corrupt: {exc})") from None
    except UnicodeDecodeError as exc:
        raise NeurotrainError(where, f"not valid JSON (truncated or corrupt: not UTF-8: {exc})") from None


def calms21_recording(key: str, seq: object, where: str, frame_width: float, fps: float) -> Recording:
    """One CalMS21 sequence as a :class:`Recording` (all seven keypoints, CalMS21's order)."""
    if not isinstance(seq, dict) or "keypoints" not in seq:
        raise NeurotrainError(where, f"sequence {key!r} has no 'keypoints'")
    kp = np.asarray(seq["keypoints"], np.float64)
    if kp.ndim != 4 or kp.shape[1:] != (2, 2, 7):
        raise NeurotrainError(where, f"sequence {key!r}: keypoints must be [T, 2 mice, 2 xy, 7 keypoints], "
                                     f"got {list(kp.shape)}")
    ann = np.asarray(seq.get("annotations", np.full(len(kp), -1)), np.int16)
    if len(ann) != len(kp):
        raise NeurotrainError(where, f"sequence {key!r}: {len(ann)} annotations for {len(kp)} frames")
    vocab = (seq.get("metadata") or {}).get("vocab")
    if vocab is not None and len(ann):  # the file's vocabulary onto BEHAVIORS, by name
        inv = {v: k for k, v in vocab.items()}
        remap = np.array([BEHAVIORS.index(inv[i]) if inv.get(i) in BEHAVIORS else -1
                          for i in range(max(inv) + 1)], np.int16)
        known = (ann >= 0) & (ann < len(remap))
        ann = np.where(known, remap[np.clip(ann, 0, len(remap) - 1)], -1).astype(np.int16)
    name = plain_name("-".join(p for p in str(key).split("/") if p), f"{where}: sequence {key!r}")
    return Recording(name, (kp.transpose(0, 1, 3, 2) / frame_width).astype(np.float32), ann, fps, where)


def read_calms21_zip(path: str | Path, frame_width: float, fps: float,
                     max_bytes: int = MAX_EXTRACT_BYTES) -> Iterator[Recording]:
    """Every sequence of a CalMS21 zip, streamed entry by entry from the archive (nothing is
    extracted). Sequences of a ``*test*.json`` entry get split 2, of another task-1 entry split 0,
    unlabeled ones none. Raises NeurotrainError naming the zip (and entry) for an unreadable
    archive, an entry outside the archive's folder, more than ``max_bytes`` unpacked, invalid JSON."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NeurotrainError(path, f"not a readable zip archive ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        for info in infos:
            p = PurePosixPath(info.filename.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts:
                raise NeurotrainError(path, f"archive entry {info.filename!r} would be written outside the archive's "
                                            "folder")
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise NeurotrainError(path, f"archive unpacks to {declared / 2**30:.1f} GiB, more than the "
                                        f"{max_bytes / 2**30:.1f} GiB allowed")
        labelled = "task1" in path.name
        for info in sorted((i for i in infos if i.filename.endswith(".json")), key=lambda i: i.filename):
            where = f"{path}: {info.filename}"
            split = (2 if "test" in PurePosixPath(info.filename).name else 0) if labelled else None
            with zf.open(info) as raw:
                for key, seq in _json_sequences(_Capped(raw, info.file_size, where), where):
                    rec = calms21_recording(key, seq, where, frame_width, fps)
                    del seq  # the parsed JSON of one sequence: never two at once
                    rec.split = split
                    yield rec


def read_calms21(path: str | Path, frame_width: float, fps: float) -> Iterator[Recording]:
    """Every sequence of a CalMS21 file: a published zip (:func:`read_calms21_zip`) or one of the
    JSON files inside it, read the same way. Raises NeurotrainError naming the file."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        yield from read_calms21_zip(path, frame_width, fps)
        return
    with open(path, "rb") as fh:
        for key, seq in _json_sequences(fh, str(path)):
            yield calms21_recording(key, seq, str(path), frame_width, fps)


def select_keypoints(kp: np.ndarray, have: list[str], want: list[str], where: str) -> np.ndarray:
    """``kp`` [T, 2, len(have), 2] reduced to the keypoints ``want`` (``lisbet.data.keypoints``)."""
    missing = [k for k in want if k not in have]
    if missing:
        raise NeurotrainError(where, f"keypoint(s) {', '.join(missing)} missing (file has {', '.join(have)}; "
                                     "map names with lisbet.data.movement.keypoint_map or choose "
                                     "lisbet.data.keypoints)")
    return kp[:, :, [have.index(k) for k in want], :]


# --------------------------------------------------------------------------- pose files
def _software(path: Path, configured: str) -> str:
    """The ``movement`` loader for ``path``: the configured one, or guessed from the file."""
    if configured != "auto":
        return configured
    suffix = path.suffix.lower()
    guess = {".nc": "netCDF", ".slp": "SLEAP", ".csv": "DeepLabCut", ".nwb": "NWB"}.get(suffix)
    if guess:
        return guess
    if suffix in (".h5", ".hdf5"):
        from neurotrain.io import open_hdf5_checked

        with open_hdf5_checked(path, "pose file") as h:
            if "tracks" in h and "node_names" in h:
                return "SLEAP"
            if "position" in h:
                return "netCDF"
            return "DeepLabCut"
    raise NeurotrainError(path, f"cannot tell which software wrote this pose file ({suffix or 'no suffix'}); set "
                                f"lisbet.data.movement.source_software to one of {', '.join(SOFTWARE)}")


def _frame_rate(ds, path: Path, configured: float | None) -> float:
    """Frames per second: the file's own (``fps`` attribute and a time coordinate in seconds,
    which must agree), else ``lisbet.data.movement.fps``."""
    from_time = None
    t = np.asarray(ds["time"].values, np.float64)
    if ds.attrs.get("time_unit") == "seconds" and len(t) > 1:
        step = np.diff(t)
        if not (step > 0).all() or np.ptp(step) > 1e-3 * np.median(step):
            raise NeurotrainError(path, "time coordinate is not evenly spaced (a variable frame rate); resample "
                                        "the file to a constant rate first")
        from_time = float(1.0 / np.median(step))
    fps = ds.attrs.get("fps")
    fps = float(fps) if fps is not None and np.isfinite(float(fps)) and float(fps) > 0 else None
    if fps is not None and from_time is not None and abs(fps - from_time) > 1e-3 * from_time:
        raise NeurotrainError(path, f"its fps attribute ({fps:g}) contradicts its time coordinate (one frame every "
                                    f"{1 / from_time:.6g} s: {from_time:.6g} fps); fix the attribute (after "
                                    "subsampling frames, set ds.attrs['fps'])")
    own = fps if fps is not None else from_time
    if own is not None:
        if configured is not None and abs(own - configured) > 1e-6 * configured:
            log.info("%s: frame rate %g fps from the file (lisbet.data.movement.fps = %g is for files "
                     "without one)", path, own, configured)
        return own
    if configured is None:
        raise NeurotrainError(path, "the file gives no frame rate: set lisbet.data.movement.fps")
    return float(configured)


def _quiet_movement() -> None:
    """movement reports its own failures through loguru on stderr; the workflow's one error line
    names the file and the cause, so those lines are dropped (warnings and info stay in ours)."""
    try:
        from loguru import logger

        logger.remove()
    except (ImportError, ValueError):
        pass


def read_pose_file(path: str | Path, m: dict, keypoints: list[str]) -> Recording:
    """One pose file read with ``movement`` (netCDF files with ``xarray.load_dataset``, as
    movement saves them, netCDF4 or netCDF3; other formats with ``movement.io.load_dataset``).
    ``m`` is ``lisbet.data.movement``: ``source_software``, ``fps``, ``keypoint_map`` (file name
    -> model name), ``individuals`` (the two to use, resident first; empty: the file's two),
    ``min_confidence`` (lower-confidence positions become gaps) and ``frame_width`` (positions are
    divided by it). Raises NeurotrainError naming the file."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "pose file not found")
    software = _software(path, m["source_software"])
    try:
        if software == "netCDF":
            ds = xr.load_dataset(path)
        else:
            from movement.io import load_dataset

            _quiet_movement()
            ds = load_dataset(path, source_software=software, fps=m["fps"])
    except NeurotrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - the libraries raise many kinds; name the file
        raise NeurotrainError(path, f"not a {software} pose file ({exc.__class__.__name__}: {exc})") from None
    if "position" not in ds:
        raise NeurotrainError(path, "no 'position' variable (movement poses layout)")
    pos = ds["position"]
    want = ("time", "space", "keypoints", "individuals")
    if sorted(pos.dims) != sorted(want):
        raise NeurotrainError(path, f"position must have dimensions {want}, got {tuple(pos.dims)}")
    if m["min_confidence"] > 0 and "confidence" in ds:
        from movement.filtering import filter_by_confidence

        if np.isnan(ds["confidence"].values).all():
            log.warning("%s: the file has no confidence values (all NaN): lisbet.data.movement.min_confidence is "
                        "not applied", path)
        else:
            pos = filter_by_confidence(pos, ds["confidence"], threshold=m["min_confidence"])
    if pos.sizes["space"] != 2:
        raise NeurotrainError(path, f"need 2-D positions (x, y), got {pos.sizes['space']} spatial dimensions")
    individuals = [str(v) for v in pos["individuals"].values]
    chosen = list(m["individuals"]) or individuals
    has = f"the file has {len(individuals)} ({', '.join(individuals)})"
    if len(individuals) < 2:
        raise NeurotrainError(path, f"need 2 individuals per recording (resident and intruder); {has}")
    missing = [i for i in chosen if i not in individuals]
    if missing:
        raise NeurotrainError(path, f"individual(s) {', '.join(missing)} of lisbet.data.movement.individuals not in "
                                    f"the file; {has}")
    if len(chosen) != 2:
        raise NeurotrainError(path, f"need 2 individuals, resident first; {has}: name two in "
                                    "lisbet.data.movement.individuals")
    names = [m["keypoint_map"].get(str(k), str(k)) for k in pos["keypoints"].values]
    arr = pos.transpose(*want).sel(individuals=chosen).values.astype(np.float64)  # [T, xy, K, 2]
    kp = select_keypoints(arr.transpose(0, 3, 2, 1), names, keypoints, str(path)) / m["frame_width"]
    largest = float(np.nanmax(np.abs(kp))) if np.isfinite(kp).any() else 0.0
    if largest > 10:
        log.warning("%s: coordinates up to %.0f after dividing by lisbet.data.movement.frame_width (%g): pixels? "
                    "The model expects arena units (about 0-1): set frame_width to the video's width in pixels",
                    path, largest, m["frame_width"])
    fps = _frame_rate(ds, path, m["fps"])
    return Recording(path.stem, kp.astype(np.float32), np.full(len(kp), -1, np.int16), fps, str(path))


def resample(rec: Recording, fps: float, allowed: bool) -> Recording:
    """``rec`` at ``fps`` frames per second (``lisbet.data.fps``): keypoints linearly interpolated
    in time (a gap stays a gap), annotations by the nearest frame. Refuses another rate when
    ``allowed`` is false (``lisbet.data.resample``)."""
    if abs(rec.fps - fps) <= 1e-6 * fps:
        return rec
    if not allowed:
        raise NeurotrainError(rec.where, f"recorded at {rec.fps:g} fps, the model's rate is {fps:g} "
                                         "(lisbet.data.fps); set lisbet.data.resample: true to resample it")
    T = len(rec.keypoints)
    t_new = np.arange(int(np.floor((T - 1) / rec.fps * fps)) + 1) / fps
    flat = rec.keypoints.reshape(T, -1).astype(np.float64)
    out = np.empty((len(t_new), flat.shape[1]))
    pos = np.clip(t_new * rec.fps, 0, T - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, T - 1)
    w = (pos - lo)[:, None]
    out[:] = flat[lo] * (1 - w) + flat[hi] * w  # NaN at either end of an interval stays NaN
    ann = rec.annotations[np.clip(np.rint(t_new * rec.fps).astype(int), 0, T - 1)]
    log.info("%s: %d frames at %g fps resampled to %d frames at %g fps (lisbet.data.fps)", rec.where, T, rec.fps,
             len(t_new), fps)
    return Recording(rec.name, out.reshape(len(t_new), *rec.keypoints.shape[1:]).astype(np.float32),
                     ann.astype(np.int16), fps, rec.where, rec.split)

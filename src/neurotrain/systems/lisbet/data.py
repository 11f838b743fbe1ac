"""LISBET data: the embedded two-mouse generator, the preprocessing of every source (the readers
of CalMS21 and of pose files are in :mod:`.poses`), and the processed HDF5.

Keypoints are (x, y) in arena units (CalMS21 pixels are divided by the frame width), K per
mouse in the order of ``lisbet.data.keypoints`` (by default CalMS21's seven, :data:`KEYPOINTS`),
the resident first, at ``lisbet.data.fps`` frames per second.

Processed HDF5 (``data/processed/lisbet.h5``):

==================================  ==================  =========================================
dataset                             shape               content
==================================  ==================  =========================================
sequences/<name>/keypoints          [T, 2, K, 2] f32    frames x mice x keypoints x (x, y)
sequences/<name>/annotations        [T] int16           behaviour index per frame (-1 = none)
split                               [n_seq] int8        0 train, 1 validation, 2 test
==================================  ==================  =========================================

Attributes: ``sequence_names``, ``behaviors`` (vocabulary, index order), ``keypoints``,
``individuals``, ``fps``, ``source``.

NaN coordinates (a keypoint the tracker lost) are filled by linear interpolation over time
within the sequence, at most ``data.max_gap_frames`` frames in a row; longer gaps, or a
keypoint missing in a whole sequence, are refused with the sequence named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, read_hdf5
from neurotrain.fetch import verify_md5
from neurotrain.systems.lisbet.poses import (BEHAVIORS, CALMS21_KEYPOINTS, Recording, read_calms21,
                                             read_pose_file, resample, select_keypoints)

KEYPOINTS = CALMS21_KEYPOINTS  # the generator's and CalMS21's keypoints (lisbet.data.keypoints picks from them)
INDIVIDUALS = ("resident", "intruder")
# body-frame template (forward, left) in arena units: a mouse about 0.09 long
TEMPLATE = np.array([[0.045, 0.0], [0.028, 0.012], [0.028, -0.012], [0.018, 0.0], [-0.018, 0.016],
                     [-0.018, -0.016], [-0.045, 0.0]])


# --------------------------------------------------------------------------- embedded generator
def _pose(centre: np.ndarray, heading: np.ndarray, wiggle: np.ndarray) -> np.ndarray:
    """Keypoints [T, 7, 2] of a mouse from its centre [T, 2], heading [T] and a body bend [T]."""
    tpl = np.repeat(TEMPLATE[None], len(centre), 0).copy()
    tpl[:, :, 1] += wiggle[:, None] * (tpl[:, :, 0] / 0.045) ** 2  # head and tail bend sideways
    c, s = np.cos(heading)[:, None], np.sin(heading)[:, None]
    x = tpl[:, :, 0] * c - tpl[:, :, 1] * s
    y = tpl[:, :, 0] * s + tpl[:, :, 1] * c
    return np.stack([x, y], -1) + centre[:, None, :]


def _states(T: int, fps: float, e: dict, rng: np.random.Generator) -> np.ndarray:
    p = np.asarray(e["state_probabilities"], float)
    p /= p.sum()
    out = np.empty(T, np.int16)
    t = 0
    prev = -1
    while t < T:
        s = prev
        while s == prev:
            s = rng.choice(len(BEHAVIORS), p=p)
        d = max(int(e["min_bout"] * fps), int(rng.exponential(e["mean_bout"]) * fps))
        out[t:t + d] = s
        t += d
        prev = s
    return out


def simulate_sequence(T: int, e: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One recording: keypoints [T, 2, 7, 2] and behaviour labels [T].

    The behaviours differ mostly in how the mice move, not where they are: investigation is a
    slow approach with sniffing (small fast head movements) toward the other's head or rear;
    attack is fast, erratic movement at close range with the intruder fleeing; mount is the
    resident behind the intruder, aligned, with rhythmic thrusting at ~4 Hz while the intruder
    stays still; other is independent wandering, close or far.
    """
    fps = e["fps"]
    dt = 1.0 / fps
    lab = _states(T, fps, e, rng)
    A, I = np.zeros((T, 2)), np.zeros((T, 2))
    ha, hi = np.zeros(T), np.zeros(T)
    A[0], I[0] = rng.uniform(0.3, 0.7, 2), rng.uniform(0.3, 0.7, 2)
    ha[0], hi[0] = rng.uniform(-np.pi, np.pi, 2)
    va = vi = 0.0
    phase = 0.0
    wig_a, wig_i = np.zeros(T), np.zeros(T)
    target_off = rng.choice([-1.0, 1.0])
    base = e["speed"]
    for t in range(1, T):
        s = BEHAVIORS[lab[t]]
        if lab[t] != lab[t - 1]:
            target_off = rng.choice([-1.0, 1.0])  # head (+1) or rear (-1) of the intruder
        # intruder
        if s == "attack":
            vi_target, turn_i = 3.0 * base, 1.2
        elif s == "mount":
            vi_target, turn_i = 0.05 * base, 0.05
        else:
            vi_target, turn_i = base * (0.5 + 0.5 * np.sin(0.3 * t * dt + 1.0)), 0.25
        hi[t] = hi[t - 1] + turn_i * rng.normal() * np.sqrt(dt) * 3
        vi = vi + 0.2 * (vi_target - vi)
        I[t] = I[t - 1] + vi * dt * np.array([np.cos(hi[t]), np.sin(hi[t])])
        # resident
        to_int = I[t] - A[t - 1]
        if s == "other":
            ha[t] = ha[t - 1] + 0.25 * rng.normal() * np.sqrt(dt) * 3
            va_target = base * 0.8
        else:
            if s == "investigation":
                goal = I[t] + target_off * 0.05 * np.array([np.cos(hi[t]), np.sin(hi[t])])
                va_target, jitter = 0.5 * base, 0.15
            elif s == "attack":
                goal = I[t]
                va_target, jitter = 3.5 * base, 1.5
            else:  # mount: behind and aligned
                goal = I[t] - 0.03 * np.array([np.cos(hi[t]), np.sin(hi[t])])
                va_target, jitter = 0.3 * base, 0.05
            d = goal - A[t - 1]
            want = np.arctan2(d[1], d[0]) if s != "mount" or np.linalg.norm(d) > 0.02 else hi[t]
            err = np.angle(np.exp(1j * (want - ha[t - 1])))
            ha[t] = ha[t - 1] + 0.3 * err + jitter * rng.normal() * np.sqrt(dt) * 3
            va_target = min(va_target, np.linalg.norm(d) / dt * 0.5 + 0.02)
        va = va + 0.25 * (va_target - va)
        step = va * dt * np.array([np.cos(ha[t]), np.sin(ha[t])])
        if s == "mount":
            phase += 2 * np.pi * 4.0 * dt
            step = step + 0.004 * np.cos(phase) * np.array([np.cos(ha[t]), np.sin(ha[t])]) * 2 * np.pi * 4.0 * dt
        if s == "investigation":
            wig_a[t] = 0.006 * np.sin(2 * np.pi * 8.0 * t * dt)  # sniffing
        elif s == "attack":
            wig_a[t], wig_i[t] = 0.01 * rng.normal(), 0.01 * rng.normal()
        A[t] = A[t - 1] + step
        # soft walls
        for P, H in ((A, ha), (I, hi)):
            for k in range(2):
                if P[t, k] < 0.05 or P[t, k] > 0.95:
                    P[t, k] = np.clip(P[t, k], 0.05, 0.95)
                    H[t] = H[t] + np.pi / 2
        if np.linalg.norm(to_int) < 0.02 and s == "other":
            ha[t] += 0.5
    kp = np.stack([_pose(A, ha, wig_a), _pose(I, hi, wig_i)], 1)
    kp += rng.normal(0.0, e["keypoint_noise"], kp.shape)
    return kp.astype(np.float32), lab


def generate_embedded(cfg: dict, out_dir: str | Path) -> None:
    """Stage ``generate``: ``sequences.npz`` (keypoints [n, T, 2, 7, 2], annotations [n, T])."""
    e = cfg["data"]["embedded"]
    rng = np.random.default_rng(e["seed"])
    T = int(round(e["duration"] * e["fps"]))
    kps, labs = zip(*[simulate_sequence(T, e, rng) for _ in range(e["n_sequences"])])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "sequences.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, keypoints=np.stack(kps), annotations=np.stack(labs), fps=np.float64(e["fps"]))


# --------------------------------------------------------------------------- preprocess
def fill_gaps(kp: np.ndarray, name: str, where, max_gap: int, keypoints=KEYPOINTS) -> np.ndarray:
    """Linear interpolation over time of NaN coordinates of ``kp`` [T, 2, K, 2], gaps of at most
    ``max_gap`` frames; a longer gap, or a keypoint missing in every frame, is refused naming the
    sequence, the mouse and the keypoint (``keypoints``: the K names)."""
    kp = kp.copy()
    flat = kp.reshape(len(kp), -1)
    for j in range(flat.shape[1]):
        bad = ~np.isfinite(flat[:, j])
        if not bad.any():
            continue
        if bad.all():
            m, k, _ = np.unravel_index(j, kp.shape[1:])
            raise NeurotrainError(where, f"sequence {name}: {INDIVIDUALS[m]} {keypoints[k]} is missing in every frame")
        runs = np.diff(np.r_[0, bad.astype(int), 0])
        longest = int((np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)).max())
        if longest > max_gap:
            m, k, _ = np.unravel_index(j, kp.shape[1:])
            raise NeurotrainError(where, f"sequence {name}: {INDIVIDUALS[m]} {keypoints[k]} missing for {longest} frames "
                                         f"in a row (data.max_gap_frames = {max_gap})")
        good = np.flatnonzero(~bad)
        flat[bad, j] = np.interp(np.flatnonzero(bad), good, flat[good, j])
    return flat.reshape(kp.shape)


def _embedded(raw: Path) -> Iterator[Recording]:
    f = raw / "sequences.npz"
    if not f.is_file():
        raise NeurotrainError(f, "embedded sequences not found")
    with np.load(f, allow_pickle=False) as z:
        fps = float(z["fps"])
        for i, (kp, ann) in enumerate(zip(z["keypoints"], z["annotations"])):
            yield Recording(f"seq{i:03d}", kp, ann, fps, str(f))


def recordings(d: dict, raw: list[Path]) -> Iterator[Recording]:
    """The recordings of ``lisbet.data``'s source, one at a time, with ``data.keypoints`` only."""
    want = list(d["keypoints"])
    if d["source"] == "embedded":
        for rec in _embedded(raw[0]):
            rec.keypoints = select_keypoints(rec.keypoints, list(KEYPOINTS), want, "lisbet.data.keypoints")
            yield rec
    elif d["source"] == "calms21":
        c = d["calms21"]
        for r in raw:
            kind = "task1" if "task1" in r.name else "unlabeled"
            try:
                verify_md5(r, c["md5"][kind])
            except NeurotrainError as exc:  # the archive's role comes from its published file name
                raise NeurotrainError(r, f"{exc.what} (taken as the {kind} archive from its file name; CalMS21 names "
                                         "them task1_classic_classification.zip and unlabeled_videos.zip)") from None
            for rec in read_calms21(r, c["frame_width"], c["fps"]):
                rec.keypoints = select_keypoints(rec.keypoints, list(KEYPOINTS), want, "lisbet.data.keypoints")
                yield rec
    else:
        for r in raw:
            yield read_pose_file(r, d["movement"], want)


def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    """Stage ``preprocess``: the embedded folder, CalMS21 zips or pose files -> processed HDF5.

    Each recording is resampled to ``lisbet.data.fps`` (or refused, ``data.resample: false``),
    checked to hold one window, gap-filled and written before the next is read, so memory holds
    one sequence at a time. Test sequences are CalMS21's own test set when there is one, else
    drawn; validation is drawn from the rest."""
    d = cfg["data"]
    raw = [Path(r) for r in (raw if isinstance(raw, (list, tuple)) else [raw])]
    W = cfg["model"]["window"]
    names: list[str] = []
    seen: set[str] = set()
    fixed_split: dict[str, int] = {}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h:
        for rec in recordings(d, raw):
            if rec.name in seen:
                raise NeurotrainError(rec.where, f"sequence {rec.name!r} appears twice (sequences are named by "
                                                 "file, or by CalMS21 id)")
            rec = resample(rec, d["fps"], d["resample"])
            kp = np.asarray(rec.keypoints, np.float32)
            if len(kp) < W:
                raise NeurotrainError(rec.where, f"sequence {rec.name}: {len(kp)} frames, fewer than one window "
                                                 f"({W} frames, config key lisbet.model.window)")
            kp = fill_gaps(kp, rec.name, rec.where, d["max_gap_frames"], d["keypoints"])
            g = h.create_group(f"sequences/{rec.name}")
            g.create_dataset("keypoints", data=kp.astype(np.float32), compression="gzip")
            g.create_dataset("annotations", data=np.asarray(rec.annotations, np.int16))
            names.append(rec.name)
            seen.add(rec.name)
            if rec.split is not None:
                fixed_split[rec.name] = rec.split
        if not names:
            raise NeurotrainError(raw[0], "no sequences found")
        names.sort()
        rng = np.random.default_rng(d["split_seed"])
        split = np.array([fixed_split.get(n, 0) for n in names], np.int8)
        if not any(v == 2 for v in fixed_split.values()):
            free = rng.permutation([i for i, n in enumerate(names) if n not in fixed_split])
            n_test = max(1, int(round(len(free) * d["test_fraction"]))) if len(free) > 2 and d["test_fraction"] > 0 else 0
            split[free[:n_test]] = 2
        train = rng.permutation(np.flatnonzero(split == 0))
        n_val = max(1, int(round(len(train) * d["val_fraction"]))) if len(train) > 1 and d["val_fraction"] > 0 else 0
        split[train[:n_val]] = 1
        h.create_dataset("split", data=split)
        h.attrs.update(sequence_names=names, behaviors=list(BEHAVIORS), keypoints=list(d["keypoints"]),
                       individuals=list(INDIVIDUALS), fps=d["fps"], source=d["source"])


def load_processed(path: str | Path) -> dict:
    def read(h):
        names = [str(n) for n in h.attrs["sequence_names"]]
        return {"names": names, "keypoints": [np.asarray(h[f"sequences/{n}/keypoints"]) for n in names],
                "annotations": [np.asarray(h[f"sequences/{n}/annotations"]) for n in names],
                "split": np.asarray(h["split"]), "behaviors": [str(b) for b in h.attrs["behaviors"]],
                "keypoint_names": [str(k) for k in h.attrs["keypoints"]],
                "fps": float(h.attrs["fps"]), "source": str(h.attrs["source"])}

    out = read_hdf5(path, read, "processed LISBET dataset")
    for name, kp in zip(out["names"], out["keypoints"]):
        check_arrays(path, {f"sequences/{name}/keypoints": kp}, finite=(f"sequences/{name}/keypoints",))
    check_arrays(path, out, codes={"split": (0, 1, 2)})
    return out

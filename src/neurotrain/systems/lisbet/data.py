"""LISBET data: the embedded two-mouse generator, CalMS21 (safe zip extraction, JSON), pose files
in the ``movement`` layout, and the processed HDF5.

Keypoints are (x, y) in arena units (CalMS21 pixels are divided by the frame width), 7 per
mouse in :data:`KEYPOINTS` order, the resident first.

Processed HDF5 (``data/processed/lisbet.h5``):

==================================  ==================  =========================================
dataset                             shape               content
==================================  ==================  =========================================
sequences/<name>/keypoints          [T, 2, 7, 2] f32    frames x mice x keypoints x (x, y)
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

import json
import tempfile
import zipfile
from pathlib import Path

import h5py
import numpy as np

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, check_arrays, open_hdf5_checked, read_hdf5
from neurotrain.fetch import verify_md5

KEYPOINTS = ("nose", "left_ear", "right_ear", "neck", "left_hip", "right_hip", "tail")
BEHAVIORS = ("attack", "investigation", "mount", "other")  # CalMS21 task 1 vocabulary order
INDIVIDUALS = ("resident", "intruder")
# body-frame template (forward, left) in arena units: a mouse about 0.09 long
TEMPLATE = np.array([[0.045, 0.0], [0.028, 0.012], [0.028, -0.012], [0.018, 0.0], [-0.018, 0.016],
                     [-0.018, -0.016], [-0.045, 0.0]])
CALMS21_FILES = {"unlabeled": "unlabeled_videos.zip", "task1": "task1_classic_classification.zip"}


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


# --------------------------------------------------------------------------- CalMS21
MAX_EXTRACT_BYTES = 64 * 2**30  # CalMS21's largest archive unpacks to about 4 GB


def safe_extract(zip_path: Path, dest: Path, max_bytes: int = MAX_EXTRACT_BYTES) -> list[Path]:
    """Extract ``zip_path`` into ``dest``, refusing any entry that would land outside it
    (absolute paths, ``..``, symlinks) before anything is written, an archive that declares more
    than ``max_bytes`` unpacked, and an entry that unpacks to more than it declares (a zip bomb)."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NeurotrainError(zip_path, f"not a readable zip archive ({exc})") from None
    with zf:
        root = dest.resolve()
        for info in zf.infolist():
            target = (root / info.filename).resolve()
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            if info.filename.startswith(("/", "\\")) or is_link or (target != root and root not in target.parents):
                raise NeurotrainError(zip_path, f"archive entry {info.filename!r} would be written outside {dest}")
        declared = sum(info.file_size for info in zf.infolist())
        if declared > max_bytes:
            raise NeurotrainError(zip_path, f"archive unpacks to {declared / 2**30:.1f} GiB, more than the "
                                            f"{max_bytes / 2**30:.1f} GiB allowed")
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for info in zf.infolist():
            if info.is_dir():
                continue
            target = root / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp, zf.open(info) as src, open(tmp, "wb") as fh:
                written = 0
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > info.file_size:
                        raise NeurotrainError(zip_path, f"archive entry {info.filename!r} unpacks to more than the "
                                                        f"{info.file_size} bytes it declares")
                    fh.write(chunk)
            out.append(target)
    return out


def read_calms21_json(path: Path, frame_width: float) -> dict[str, dict]:
    """Sequences of a CalMS21 JSON file: {name: {"keypoints": [T, 2, 7, 2], "annotations": [T]}}
    (keypoints in the file are [T, mice, xy, keypoints] pixels); ``vocab`` from its metadata."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NeurotrainError(path, f"not valid JSON (truncated or corrupt: {exc})") from None
    out: dict[str, dict] = {}
    for group in data.values():
        for name, seq in group.items():
            if "keypoints" not in seq:
                raise NeurotrainError(path, f"sequence {name!r} has no 'keypoints'")
            kp = np.asarray(seq["keypoints"], np.float64)
            if kp.ndim != 4 or kp.shape[1:] != (2, 2, 7):
                raise NeurotrainError(path, f"sequence {name!r}: keypoints must be [T, 2 mice, 2 xy, 7 keypoints], "
                                            f"got {list(kp.shape)}")
            ann = np.asarray(seq.get("annotations", np.full(len(kp), -1)), np.int16)
            if len(ann) != len(kp):
                raise NeurotrainError(path, f"sequence {name!r}: {len(ann)} annotations for {len(kp)} frames")
            vocab = (seq.get("metadata") or {}).get("vocab")
            if vocab is not None and len(ann):
                # map the file's vocabulary onto BEHAVIORS by name
                inv = {v: k for k, v in vocab.items()}
                remap = np.array([BEHAVIORS.index(inv[i]) if inv.get(i) in BEHAVIORS else -1
                                  for i in range(max(inv) + 1)], np.int16)
                known = (ann >= 0) & (ann < len(remap))
                ann = np.where(known, remap[np.clip(ann, 0, len(remap) - 1)], -1).astype(np.int16)
            if Path(name).name in out:
                raise NeurotrainError(path, f"two sequences named {Path(name).name!r}")
            out[Path(name).name] = {"keypoints": (kp.transpose(0, 1, 3, 2) / frame_width).astype(np.float32),
                                    "annotations": ann}
    return out


# --------------------------------------------------------------------------- movement files
def read_movement(path: Path) -> dict:
    """A pose file in the ``movement`` layout (netCDF4/HDF5 as written by xarray): a
    ``position`` variable with dimensions (time, space, keypoints, individuals) and the
    coordinate variables ``keypoints`` and ``individuals``. Returns keypoints [T, 2, 7, 2] in
    :data:`KEYPOINTS` and resident/intruder order (individuals in file order)."""
    try:
        with open_hdf5_checked(path, "pose file") as h:
            if "position" not in h:
                raise NeurotrainError(path, "no 'position' variable (movement layout)")
            pos = h["position"]
            dims = [d[0].name.lstrip("/") if len(d) else "" for d in pos.dims] if len(pos.dims) else []
            if not dims or "" in dims:
                dims = [str(x) for x in pos.attrs.get("_Netcdf4Dimid", [])] or ["time", "space", "keypoints", "individuals"]
            arr = np.asarray(pos[()], np.float64)
            names = {k: [v.decode() if isinstance(v, bytes) else str(v) for v in h[k][()]]
                     for k in ("keypoints", "individuals") if k in h}
    except NeurotrainError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise NeurotrainError(path, f"cannot read pose file ({exc.__class__.__name__}: {exc})") from None
    want = ("time", "space", "keypoints", "individuals")
    if sorted(dims) != sorted(want) or arr.ndim != 4:
        raise NeurotrainError(path, f"position must have dimensions {want}, got {dims}")
    arr = arr.transpose([dims.index(d) for d in want])  # [T, space, kp, ind]
    kp_names = names.get("keypoints", list(KEYPOINTS))
    missing = [k for k in KEYPOINTS if k not in kp_names]
    if missing:
        raise NeurotrainError(path, f"keypoint(s) {', '.join(missing)} missing (file has {', '.join(kp_names)})")
    if arr.shape[3] != 2 or arr.shape[1] != 2:
        raise NeurotrainError(path, f"need 2 individuals in 2-D space, got {arr.shape[3]} individuals, "
                                    f"{arr.shape[1]} spatial dims")
    arr = arr[:, :, [kp_names.index(k) for k in KEYPOINTS], :]
    return {"keypoints": arr.transpose(0, 3, 2, 1).astype(np.float32)}  # [T, ind, kp, xy]


# --------------------------------------------------------------------------- preprocess
def fill_gaps(kp: np.ndarray, name: str, where, max_gap: int) -> np.ndarray:
    """Linear interpolation over time of NaN coordinates, gaps of at most ``max_gap`` frames."""
    kp = kp.copy()
    flat = kp.reshape(len(kp), -1)
    for j in range(flat.shape[1]):
        bad = ~np.isfinite(flat[:, j])
        if not bad.any():
            continue
        if bad.all():
            m, k, _ = np.unravel_index(j, kp.shape[1:])
            raise NeurotrainError(where, f"sequence {name}: {INDIVIDUALS[m]} {KEYPOINTS[k]} is missing in every frame")
        runs = np.diff(np.r_[0, bad.astype(int), 0])
        longest = int((np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)).max())
        if longest > max_gap:
            m, k, _ = np.unravel_index(j, kp.shape[1:])
            raise NeurotrainError(where, f"sequence {name}: {INDIVIDUALS[m]} {KEYPOINTS[k]} missing for {longest} frames "
                                         f"in a row (data.max_gap_frames = {max_gap})")
        good = np.flatnonzero(~bad)
        flat[bad, j] = np.interp(np.flatnonzero(bad), good, flat[good, j])
    return flat.reshape(kp.shape)


def preprocess_raw(cfg: dict, raw, out: str | Path) -> None:
    """Stage ``preprocess``: embedded folder, CalMS21 zips or movement files -> processed HDF5."""
    d = cfg["data"]
    raw = [Path(r) for r in (raw if isinstance(raw, (list, tuple)) else [raw])]
    seqs: dict[str, dict] = {}
    fixed_split: dict[str, int] = {}
    if d["source"] == "embedded":
        f = raw[0] / "sequences.npz"
        if not f.is_file():
            raise NeurotrainError(f, "embedded sequences not found")
        with np.load(f, allow_pickle=False) as z:
            fps = float(z["fps"])
            for i, (kp, ann) in enumerate(zip(z["keypoints"], z["annotations"])):
                seqs[f"seq{i:03d}"] = {"keypoints": kp, "annotations": ann}
    elif d["source"] == "calms21":
        c = d["calms21"]
        fps = c["fps"]
        for r in raw:
            kind = "task1" if "task1" in r.name else "unlabeled"
            verify_md5(r, c["md5"][kind])
            with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".extract_") as folder:
                files = safe_extract(r, Path(folder))
                for jf in sorted(p for p in files if p.suffix == ".json"):
                    entry = f"{r}: {jf.relative_to(folder).as_posix()}"  # name the zip entry, not the scratch copy
                    try:
                        sequences = read_calms21_json(jf, c["frame_width"])
                    except NeurotrainError as exc:
                        raise NeurotrainError(entry, exc.what) from None
                    for name, s in sequences.items():
                        if name in seqs:
                            raise NeurotrainError(entry, f"sequence {name!r} appears in more than one file")
                        if kind == "task1":
                            fixed_split[name] = 2 if "test" in jf.name else 0
                        seqs[name] = s
    else:  # movement
        fps = d["movement"]["fps"]
        for r in raw:
            s = read_movement(r)
            s["annotations"] = np.full(len(s["keypoints"]), -1, np.int16)
            if r.stem in seqs:
                raise NeurotrainError(r, f"another pose file is also named {r.stem!r} (sequences are named by file)")
            seqs[r.stem] = s
    if not seqs:
        raise NeurotrainError(raw[0], "no sequences found")
    W = cfg["model"]["window"]
    for name, s in seqs.items():
        where = raw[0] if d["source"] == "embedded" else next((r for r in raw if r.stem == name), raw[0])
        kp = np.asarray(s["keypoints"], np.float32)
        if kp.ndim != 4 or kp.shape[1:] != (2, 7, 2):
            raise NeurotrainError(where, f"sequence {name}: keypoints must be [T, 2, 7, 2], got {list(kp.shape)}")
        if len(kp) < W:
            raise NeurotrainError(where, f"sequence {name}: {len(kp)} frames, fewer than one window "
                                         f"({W} frames, config key lisbet.model.window)")
        s["keypoints"] = fill_gaps(kp, name, where, d["max_gap_frames"])
    names = sorted(seqs)
    rng = np.random.default_rng(d["split_seed"])
    split = np.zeros(len(names), np.int8)
    for i, n in enumerate(names):
        split[i] = fixed_split.get(n, 0)
    # test sequences: CalMS21's own test set when there is one, else drawn; validation is drawn
    # from what is left for training (CalMS21's task-1 training set included)
    if not any(v == 2 for v in fixed_split.values()):
        free = rng.permutation([i for i, n in enumerate(names) if n not in fixed_split])
        n_test = max(1, int(round(len(free) * d["test_fraction"]))) if len(free) > 2 and d["test_fraction"] > 0 else 0
        split[free[:n_test]] = 2
    train = rng.permutation(np.flatnonzero(split == 0))
    n_val = max(1, int(round(len(train) * d["val_fraction"]))) if len(train) > 1 and d["val_fraction"] > 0 else 0
    split[train[:n_val]] = 1
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h:
            for n in names:
                g = h.create_group(f"sequences/{n}")
                g.create_dataset("keypoints", data=seqs[n]["keypoints"].astype(np.float32), compression="gzip")
                g.create_dataset("annotations", data=np.asarray(seqs[n]["annotations"], np.int16))
            h.create_dataset("split", data=split)
            h.attrs.update(sequence_names=names, behaviors=list(BEHAVIORS), keypoints=list(KEYPOINTS),
                           individuals=list(INDIVIDUALS), fps=fps, source=d["source"])


def load_processed(path: str | Path) -> dict:
    def read(h):
        names = [str(n) for n in h.attrs["sequence_names"]]
        return {"names": names, "keypoints": [np.asarray(h[f"sequences/{n}/keypoints"]) for n in names],
                "annotations": [np.asarray(h[f"sequences/{n}/annotations"]) for n in names],
                "split": np.asarray(h["split"]), "behaviors": [str(b) for b in h.attrs["behaviors"]],
                "fps": float(h.attrs["fps"]), "source": str(h.attrs["source"])}

    out = read_hdf5(path, read, "processed LISBET dataset")
    for name, kp in zip(out["names"], out["keypoints"]):
        check_arrays(path, {f"sequences/{name}/keypoints": kp}, finite=(f"sequences/{name}/keypoints",))
    check_arrays(path, out, codes={"split": (0, 1, 2)})
    return out

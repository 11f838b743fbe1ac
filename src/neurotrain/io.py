"""Atomic writers and safe readers for every artifact the workflow produces.

A file is either whole or absent: every writer writes to a temporary name in the target folder
and renames it into place (``os.replace`` is atomic on POSIX). Directories of artifacts are
built in a temporary sibling folder and renamed as a whole.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from neurotrain.errors import NeurotrainError


_UMASK = os.umask(0)
os.umask(_UMASK)


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _write_failure(path: Path, exc: BaseException) -> NeurotrainError | None:
    """A full disk, an exceeded quota or file-size limit, or a read-only filesystem while
    writing ``path``, as the one-line user error naming ``path`` (None for anything else)."""
    if isinstance(exc, OSError) and (exc.errno in _NO_ROOM or "No space left" in str(exc)):
        remedy = "make it writable" if exc.errno == errno.EROFS else "free space"
        return NeurotrainError(path, f"cannot write it: {os.strerror(exc.errno) if exc.errno else exc} "
                                     f"(nothing was replaced; {remedy} and rerun)")
    return None


def sweep_leftovers(folder: Path, name: str) -> None:
    """Remove the temporaries an earlier writer of ``folder/name`` left when it was killed
    (SIGKILL, a node lost mid-job): ``.<name>.<8 random characters>.tmp`` or ``.old``, as
    ``tempfile`` names them here. Only one job writes a given path (Snakemake's rule), so every
    such name belongs to a dead writer; another target's temporaries never match."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if pattern.fullmatch(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        failure = _write_failure(path, exc)
        if failure is not None:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, NeurotrainError) and exc.where.startswith(str(tmp) + os.sep):
            # a file inside the folder: name it where it was going, not the temporary folder
            raise NeurotrainError(path / os.path.relpath(exc.where, tmp), exc.what) from None
        failure = _write_failure(path, exc)
        if failure is not None:
            raise failure from None
        raise


@contextlib.contextmanager
def staged(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside ``out_dir`` for a stage that writes several artifacts there
    (extraction's ``weights/`` and ``outputs/``): when the block succeeds every entry moves into
    ``out_dir`` together, replacing the earlier ones; when it fails none does, so no earlier
    result is lost and no new one stands beside an old one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out, "stage")  # one stage stages into a given folder
    tmp = Path(tempfile.mkdtemp(prefix=".stage.", suffix=".tmp", dir=out))
    try:
        yield tmp
        for entry in sorted(tmp.iterdir()):
            dest = out / entry.name
            if dest.is_dir() and not dest.is_symlink():
                sweep_leftovers(out, entry.name)
                old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".old", dir=out))
                os.replace(dest, old / "x")
                os.replace(entry, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """Write one array as ``.npy`` atomically (never pickled)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` file without allowing pickles; a missing or unreadable file is a
    NeurotrainError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "not found; run the earlier stages first")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise NeurotrainError(path, f"not a readable .npy array ({exc.__class__.__name__}: {exc})") from None


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (a generator's ground truth), without pickles; a missing
    or unreadable file is a NeurotrainError naming it."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise NeurotrainError(path, f"not a readable .npz file ({exc.__class__.__name__}: {exc})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _strict(obj: Any, where: str, replaced: list[str]) -> Any:
    """``obj`` with numpy values converted and every NaN or infinite number replaced by None
    (JSON ``null``); the key path of each replacement is appended to ``replaced``."""
    if isinstance(obj, dict):
        return {k: _strict(v, f"{where}.{k}" if where else str(k), replaced) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v, f"{where}[{i}]", replaced) for i, v in enumerate(obj)]
    if isinstance(obj, (np.ndarray, np.generic)):
        return _strict(obj.tolist(), where, replaced)
    if isinstance(obj, float) and not np.isfinite(obj):
        replaced.append(where)
        return None
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON (RFC 8259: no NaN or Infinity literals) atomically, with numpy scalars
    and arrays converted. A number that is not finite is written as ``null`` and logged with
    its key path, so that every JSON reader accepts the file."""
    replaced: list[str] = []
    obj = _strict(obj, "", replaced)
    if replaced:
        logging.getLogger("neurotrain.io").warning(
            "%s: %d value(s) not finite, written as null: %s", path, len(replaced),
            ", ".join(replaced[:5]) + (" ..." if len(replaced) > 5 else ""))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON artifact; a missing file or one that is not UTF-8 JSON is a NeurotrainError
    naming it."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "not found; run the earlier stages first")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NeurotrainError(path, f"not valid JSON ({exc.__class__.__name__}: {exc})") from None


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def refuse_external_links(fh, path) -> None:
    """An HDF5 file (an open ``h5py.File``) whose links all stay inside it: an external link
    (or a link to a virtual dataset's source file) would make a reader open another file that
    nobody named. Raises NeurotrainError naming ``path`` and the link."""
    import h5py

    found = []

    def visit(name, link):
        if isinstance(link, h5py.ExternalLink):
            found.append(f"{name} -> {link.filename}:{link.path}")

    fh.visititems_links(visit)
    if not found:
        def virtual(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.is_virtual:
                found.append(f"{name} (a virtual dataset over other files)")
        fh.visititems(virtual)
    if found:
        raise NeurotrainError(path, f"HDF5 link to another file refused: {found[0]}")


def open_hdf5_checked(path: str | os.PathLike, what: str):
    """Open an HDF5 file read-only after :func:`refuse_external_links` (the NWB readers open the
    checked file with pynwb afterwards); raises NeurotrainError naming ``path``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise NeurotrainError(path, f"cannot read {what}, truncated or corrupt ({exc.__class__.__name__}: {exc})") from None
    try:
        refuse_external_links(fh, path)
    except BaseException:
        fh.close()
        raise
    return fh


def read_hdf5(path: str | os.PathLike, reader, what: str):
    """``reader(h5py.File)`` on an existing HDF5 file; a missing file, an unreadable file or a
    missing dataset/attribute becomes a NeurotrainError naming ``path`` and ``what`` it should be."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, f"{what} not found")
    try:
        with h5py.File(path, "r") as fh:
            refuse_external_links(fh, path)
            return reader(fh)
    except PermissionError:
        raise NeurotrainError(path, "cannot read it (permission denied)") from None
    except (OSError, KeyError) as exc:
        raise NeurotrainError(path, f"not a {what} ({exc.__class__.__name__}: {exc})") from None


def check_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], finite: tuple[str, ...] = (),
                 indices: dict[str, int] | None = None, codes: dict[str, tuple[int, ...]] | None = None) -> None:
    """The checks every reader of a processed file makes before a stage computes with it: the
    ``finite`` arrays hold no NaN/Inf; the ``indices`` arrays (``{name: n}``) are integers in
    ``[0, n)``; the ``codes`` arrays hold only the listed values (a split's 0/1/2). Raises
    NeurotrainError naming ``path`` and the array."""
    for name in finite:
        a = np.asarray(arrays[name])
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise NeurotrainError(path, f"{name} has {int(a.size - np.isfinite(a).sum())} NaN/Inf values")
    for name, n in (indices or {}).items():
        a = np.asarray(arrays[name])
        if a.dtype.kind not in "iu" or (a.size and (a.min() < 0 or a.max() >= n)):
            raise NeurotrainError(path, f"{name} must hold indices in [0, {n}), got "
                                        f"{a.dtype} {a.min() if a.size else ''}..{a.max() if a.size else ''}")
    for name, allowed in (codes or {}).items():
        a = np.asarray(arrays[name])
        bad = ~np.isin(a, allowed)
        if bad.any():
            raise NeurotrainError(path, f"{name} holds {a[bad][0].item()!r}, not one of {list(allowed)}")

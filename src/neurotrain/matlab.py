"""Read and write MATLAB ``.mat`` files, both v5 (scipy) and v7.3 (HDF5).

Arrays come back with MATLAB's shapes: v7.3 files store arrays column-major, so their HDF5
datasets hold the reversed shape; :func:`read_mat` transposes them back.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np
import scipy.io

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, open_hdf5_checked

_V5_MAGIC = b"MATLAB 5.0 MAT-file"


def mat_version(path: str | Path) -> str:
    """Return ``"v5"`` or ``"v7.3"``; raise if ``path`` is not a MATLAB file."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    if path.stat().st_size == 0:
        raise NeurotrainError(path, "file is empty")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 7.3 MAT-file") or (len(head) >= 8 and h5py.is_hdf5(str(path))):
        return "v7.3"
    if head.startswith(_V5_MAGIC):
        return "v5"
    raise NeurotrainError(path, "not a MATLAB .mat file (no v5 or v7.3 header)")


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """All numeric variables of a ``.mat`` file as numpy arrays, with MATLAB's shapes."""
    path = Path(path)
    version = mat_version(path)
    try:
        if version == "v5":
            raw = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=True)
            return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}
        out: dict[str, np.ndarray] = {}
        with open_hdf5_checked(path, "v7.3 .mat file") as fh:
            for name, obj in fh.items():
                if isinstance(obj, h5py.Dataset) and not name.startswith("#"):
                    if obj.attrs.get("MATLAB_empty", 0):  # MATLAB stores [] as its dimensions
                        out[name] = np.zeros(tuple(int(d) for d in np.asarray(obj[()]).ravel()[::-1]))
                    else:
                        out[name] = np.asarray(obj[()]).T
        return out
    except NeurotrainError:
        raise
    except Exception as exc:  # scipy and h5py raise many types for damaged files
        raise NeurotrainError(path, f"cannot read {version} .mat file, truncated or corrupt ({exc.__class__.__name__}: {exc})") from None


def write_mat(path: str | Path, variables: Mapping[str, np.ndarray], version: str = "v5") -> None:
    """Write ``variables`` as a MATLAB file of the given version, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if version == "v5":
            with open(tmp, "wb") as fh:
                scipy.io.savemat(fh, {k: np.asarray(v) for k, v in variables.items()}, do_compression=True)
        elif version == "v7.3":
            with h5py.File(tmp, "w", userblock_size=512) as fh:
                for name, value in variables.items():
                    arr = np.asarray(value, dtype=np.float64)
                    if arr.ndim < 2:
                        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr.reshape(1, 1)
                    ds = fh.create_dataset(name, data=arr.T)
                    ds.attrs["MATLAB_class"] = np.bytes_("double")
            stamp = _dt.datetime(2000, 1, 1).strftime("%a %b %d %H:%M:%S %Y")
            header = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".encode()
            header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
            with open(tmp, "r+b") as fh:
                fh.write(header[:128])
        else:
            raise ValueError(f"unknown .mat version {version!r}")

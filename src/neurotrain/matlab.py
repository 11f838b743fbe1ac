"""Read and write MATLAB ``.mat`` files: v5 and v7.3 (HDF5) through one reader, pymatreader.

:func:`read_mat` gives the same Python value for a variable whatever version the file is:

==============================  ==========================================================
MATLAB class                    value
==============================  ==========================================================
double, single, (u)int*         ``np.ndarray`` with MATLAB's shape and type (a scalar is
                                ``(1, 1)``); v7.3 files store arrays column-major, so the
                                HDF5 dataset holds the reversed shape, and the reader
                                transposes it back
logical                         ``np.ndarray`` of bool, MATLAB's shape
char                            ``str`` for one row (``'left'``); ``list[str]`` for a char
                                matrix, one string per row, MATLAB's padding blanks kept
                                (``['left ', 'right']``)
cell                            ``list`` nested over the non-singleton dimensions, first
                                dimension outermost (a 1x3 or 3x1 cell is a list of 3, a
                                2x3 cell a list of 2 lists of 3, a 1x1 cell a list of 1)
struct                          ``dict`` field -> value (a struct array: field -> list)
sparse                          ``scipy.sparse.csc_array``
==============================  ==========================================================

Inside cells and structs the values are pymatreader's: numeric arrays lose their singleton
dimensions and a numeric scalar is a Python number. MATLAB ``string`` arrays and other class
objects (``table``, ``datetime``, ...) are stored as opaque objects that neither version can be
read back from: reading one raises a :class:`~neurotrain.errors.NeurotrainError` that says how
to save it (``cellstr``).
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np
import pymatreader
import scipy.io

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path, open_hdf5_checked

_V5_MAGIC = b"MATLAB 5.0 MAT-file"
# bytes 124..127 of a v7.3 file's 512-byte header: version 0x0200 and the endian indicator
_V73_VERSION = (b"\x00\x02IM", b"\x02\x00MI")

# MATLAB class -> numpy type of its arrays
_NUMERIC = {"double": np.float64, "single": np.float32, "logical": np.bool_,
            "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
            "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64}
_COMPLEX = {"double": np.complex128, "single": np.complex64}
# "unknown": an HDF5 dataset without a MATLAB_class attribute (written by other tools)
_READABLE = set(_NUMERIC) | {"char", "cell", "struct", "sparse", "unknown"}


def mat_version(path: str | Path) -> str:
    """``"v5"`` or ``"v7.3"``, from the file's header.

    Raises NeurotrainError naming ``path`` if it is missing, empty, not a MATLAB file, or an
    HDF5 file without MATLAB's v7.3 header.
    """
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    if path.stat().st_size == 0:
        raise NeurotrainError(path, "file is empty")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(_V5_MAGIC):
        return "v5"
    hdf5 = h5py.is_hdf5(str(path))
    if hdf5 and head[124:128] in _V73_VERSION:
        return "v7.3"
    if head.startswith(b"MATLAB 7.3 MAT-file"):  # the header of a file cut before its HDF5 superblock
        return "v7.3"
    if hdf5:
        raise NeurotrainError(path, "an HDF5 file without MATLAB's v7.3 header, not a .mat file (save it in "
                                    "MATLAB with save(file, ..., '-v7.3'), or as v5 with '-v7')")
    raise NeurotrainError(path, "not a MATLAB .mat file (no v5 or v7.3 header)")


def read_mat(path: str | Path, variable_names: Iterable[str] | None = None) -> dict[str, Any]:
    """The variables of a v5 or v7.3 ``.mat`` file, the same values from either version (the
    table in the module docstring): numeric arrays with MATLAB's shapes, char as ``str``,
    cellstr as ``list[str]``, struct as ``dict``.

    ``variable_names``: read only these (absent names are left out of the result, so the
    caller names what is missing); default all.

    Raises NeurotrainError naming ``path``: file not found, empty, not a MATLAB file, a v7.3
    file with HDF5 external links, a truncated or corrupt file, or a requested variable that
    is a MATLAB string array or class object.
    """
    path = Path(path)
    version = mat_version(path)
    if version == "v7.3":  # external links would make the reader open other files
        open_hdf5_checked(path, "v7.3 .mat file").close()
    try:
        with warnings.catch_warnings():  # pymatreader warns on objects; they are refused below
            warnings.simplefilter("ignore")
            info = {name: (tuple(int(d) for d in shape), cls) for name, shape, cls in pymatreader.whosmat(path)
                    if not name.startswith(("__", "#"))}
            wanted = list(info) if variable_names is None else [n for n in variable_names if n in info]
            for name in wanted:
                _refuse_objects(path, name, info[name][1])
            raw = pymatreader.read_mat(path, variable_names=wanted) if wanted else {}
    except NeurotrainError:
        raise
    except Exception as exc:  # scipy, h5py and pymatreader raise many types for damaged files
        raise NeurotrainError(path, f"cannot read {version} .mat file, truncated or corrupt "
                                    f"({exc.__class__.__name__}: {exc})") from None
    out = {}
    for name in wanted:
        shape, cls = info[name]
        if name not in raw or raw[name] is None:  # pymatreader's value for a string array
            _refuse_objects(path, name, "string")
        out[name] = _normalize(raw[name], shape, cls, version)
    return out


def _refuse_objects(path: Path, name: str, cls: str) -> None:
    if cls == "string":
        raise NeurotrainError(path, f"variable {name!r} is a MATLAB string array, which cannot be read from a "
                                    f".mat file: save it as a cell array of char, {name} = cellstr({name})")
    if cls not in _READABLE:
        raise NeurotrainError(path, f"variable {name!r} is a MATLAB object (class {cls}), which cannot be read "
                                    f"from a .mat file: save its contents as numbers, char, cell or struct "
                                    f"(a string array: {name} = cellstr({name}))")


def _normalize(value: Any, shape: tuple[int, ...], cls: str, version: str) -> Any:
    """One top-level variable as pymatreader gives it -> the documented value (same for v5
    and v7.3): pymatreader squeezes arrays and returns 1x1 cells as their element."""
    if cls in _NUMERIC or (cls == "unknown" and isinstance(value, (np.ndarray, np.number, int, float, complex))):
        arr = np.asarray(value)
        if cls in _NUMERIC:
            dtype = _COMPLEX[cls] if arr.dtype.kind == "c" and cls in _COMPLEX else _NUMERIC[cls]
            arr = arr.astype(dtype, copy=False)
        if arr.size == math.prod(shape):
            arr = arr.reshape(shape)
        return arr
    if cls == "char":
        return _char(value, shape, version)
    if cls == "cell":
        return _cell(value, shape, version)
    return value


def _char(value: Any, shape: tuple[int, ...], version: str) -> str | list[str]:
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "U" or value.size == 0:  # '' (v7.3: an empty numeric array)
            return ""
        if value.ndim == 0:
            return str(value)
        return [str(s) for s in value.ravel()]
    if isinstance(value, list):
        return [str(s) for s in value]
    value = str(value)
    if version == "v7.3" and len(shape) == 2 and shape[0] > 1 and shape[1] == 1:
        return list(value)  # an n x 1 char column: n rows of one character (v5 gives them so)
    return value


def _cell(value: Any, shape: tuple[int, ...], version: str) -> list:
    n = math.prod(shape)
    if n == 0:
        return []
    if n == 1:
        return [value]
    dims = [d for d in shape if d != 1]
    if version == "v7.3" and len(dims) > 1 and isinstance(value, list) and len(value) == n:
        # pymatreader lists a v7.3 cell's elements in MATLAB's (column-major) order
        flat = np.empty(n, dtype=object)
        for i, item in enumerate(value):
            flat[i] = item
        return _nested(flat.reshape(dims, order="F"))
    return list(value)


def _nested(arr: np.ndarray) -> list:
    if arr.ndim == 1:
        return list(arr)
    return [_nested(arr[i]) for i in range(arr.shape[0])]


def write_mat(path: str | Path, variables: Mapping[str, np.ndarray], version: str = "v5") -> None:
    """Write numeric ``variables`` as a MATLAB file of the given version, atomically.

    v7.3 files get MATLAB's layout: a 512-byte header, arrays stored column-major (the HDF5
    dataset holds the reversed shape, at least 2-D) with a ``MATLAB_class`` attribute.
    Raises ValueError for an unknown version.
    """
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

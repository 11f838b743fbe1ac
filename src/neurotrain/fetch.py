"""Checksummed downloads: retried, written atomically, verified before anything opens them.

A file is downloaded to a temporary name beside its target, its md5 is checked, and only then
is it renamed into place; a failed or interrupted download leaves nothing behind. Existing
files whose checksum matches are not downloaded again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path

log = logging.getLogger("neurotrain.fetch")


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise unless ``path`` exists and has md5 ``expected`` (call before unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    got = md5_file(path)
    if got != expected.lower():
        raise NeurotrainError(path, f"checksum mismatch: md5 {got}, expected {expected.lower()}")


def read_verified(path: str | Path, expected: str) -> bytes:
    """The bytes of ``path`` after their md5 matched ``expected``: what is parsed (a pickle) is
    exactly what was verified, never a second read of a file that may have changed."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    data = path.read_bytes()
    got = hashlib.md5(data).hexdigest()
    if got != expected.lower():
        raise NeurotrainError(path, f"checksum mismatch: md5 {got}, expected {expected.lower()}")
    return data


def download(url: str, dest: str | Path, md5: str, retries: int = 3, timeout: float = 60.0,
             backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` and check its md5; retry on network errors and bad checksums."""
    dest = Path(dest)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise NeurotrainError(url, f"only http(s) addresses are downloaded, not {scheme or 'a bare path'!r}: "
                                   "a local file is given by the source's own path key")
    if dest.is_file() and md5_file(dest) == md5.lower():
        log.info("%s already present (md5 ok)", dest)
        return dest
    last_error = "no attempt made"
    for attempt in range(1, retries + 1):
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                    while block := resp.read(1 << 20):
                        fh.write(block)
                got = md5_file(tmp)
                if got != md5.lower():
                    raise ValueError(f"checksum mismatch: md5 {got}, expected {md5.lower()}")
            log.info("downloaded %s -> %s", url, dest)
            return dest
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            last_error = str(exc)
            log.warning("download %s failed (attempt %d/%d): %s", url, attempt, retries, exc)
            if attempt < retries:
                time.sleep(backoff * attempt)
    raise NeurotrainError(url, f"download failed after {retries} attempts: {last_error}")

"""Checksummed downloads (pooch): retried, verified, written atomically, kept in a cache.

:func:`download` fetches one http(s) file with pooch and checks its md5 or sha256 before
anything sees it. With a cache folder, each verified file is kept there under its checksum: a
later request for the same checksum is served from the cache without touching the network,
and the target path is written from it (hard link, or copy across filesystems). Either way
the target is renamed into place only when whole, so a failed, interrupted or mismatched
download leaves nothing at the target. A target already holding the right bytes is kept.

:func:`md5_file`, :func:`verify_md5` and :func:`read_verified` check files the systems read
(the rat recordings are pickles, opened only after their md5 matches).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

import pooch
import requests

from neurotrain.errors import NeurotrainError
from neurotrain.io import atomic_path

log = logging.getLogger("neurotrain.fetch")

HASH_LENGTHS = {"md5": 32, "sha256": 64}
# HTTP statuses worth another attempt; any other client error (404, 403, ...) is final
_RETRY_STATUSES = {408, 425, 429}


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The md5 of a file, as lowercase hex."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise NeurotrainError naming ``path`` unless it exists and has md5 ``expected`` (call
    before unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    got = md5_file(path)
    if got != expected.lower():
        raise NeurotrainError(path, f"checksum mismatch: md5 {got}, expected {expected.lower()}")


def read_verified(path: str | Path, expected: str) -> bytes:
    """The bytes of ``path`` after their md5 matched ``expected``: what is parsed (a pickle) is
    exactly what was verified, never a second read of a file that may have changed. Raises
    NeurotrainError naming ``path`` if it is missing or its md5 differs."""
    path = Path(path)
    if not path.is_file():
        raise NeurotrainError(path, "file not found")
    data = path.read_bytes()
    got = hashlib.md5(data).hexdigest()
    if got != expected.lower():
        raise NeurotrainError(path, f"checksum mismatch: md5 {got}, expected {expected.lower()}")
    return data


def parse_hash(known_hash: str, where: object = "checksum") -> tuple[str, str]:
    """``(algorithm, lowercase hex)`` of ``"md5:<32 hex>"``, ``"sha256:<64 hex>"``, or a plain
    hex digest (32 digits: md5, 64: sha256). Raises NeurotrainError naming ``where`` otherwise."""
    text = str(known_hash).strip()
    alg, sep, digest = text.partition(":")
    if not sep:
        alg, digest = {32: "md5", 64: "sha256"}.get(len(text), ""), text
    alg = alg.lower()
    if alg not in HASH_LENGTHS or not re.fullmatch(rf"[0-9a-fA-F]{{{HASH_LENGTHS[alg]}}}", digest):
        raise NeurotrainError(where, f"checksum {text!r} is not md5:<32 hex digits>, sha256:<64 hex digits> "
                                     "or a plain md5")
    return alg, digest.lower()


def _file_hash(path: Path, alg: str) -> str:
    return pooch.file_hash(str(path), alg=alg).lower()


def _check_url(url: str) -> None:
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise NeurotrainError(url, f"only http(s) addresses are downloaded, not {scheme or 'a bare path'!r}: "
                                   "a local file is given by the source's own path key")


def _final(exc: Exception) -> bool:
    """True for an HTTP error no retry can fix (a missing file, no access)."""
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return 400 <= status < 500 and status not in _RETRY_STATUSES
    return False


def _why(exc: Exception, alg: str, digest: str) -> str:
    """One line for a failed attempt (pooch's hash message is several sentences)."""
    text = str(exc)
    if isinstance(exc, ValueError) and "does not match the known hash" in text:
        got = re.search(r"but got ([0-9a-fA-F]+)", text)
        return f"checksum mismatch: {alg} {got.group(1).lower() if got else '?'}, expected {digest}"
    return " ".join(text.split()) or exc.__class__.__name__


def _link_or_copy(src: Path, dest: Path) -> None:
    """Write ``dest`` from ``src`` atomically: a hard link, or a copy across filesystems."""
    with atomic_path(dest) as tmp:
        linked = False
        if src.stat().st_uid == os.getuid():  # the writer may chmod what it links
            tmp.unlink()
            try:
                os.link(src, tmp)
                linked = True
            except OSError:
                tmp.touch()
        if not linked:
            shutil.copyfile(src, tmp)
        os.utime(tmp)  # the target is new: newer than the rule's inputs, whenever the cache got it


def download(url: str, dest: str | Path, known_hash: str, retries: int = 3, timeout: float = 60.0,
             backoff: float = 1.0, cache: str | Path | None = None, progressbar: bool = True) -> Path:
    """Download ``url`` (http or https) to ``dest`` and verify it; return ``dest``.

    ``known_hash``: ``"md5:<hex>"``, ``"sha256:<hex>"`` or a plain md5 (hex). ``retries``:
    attempts in all (a network error, a 5xx/408/429 answer or a checksum mismatch is tried
    again after ``backoff`` x attempt seconds; a 404 or other client error is not).
    ``timeout``: seconds to wait for the server. ``cache``: folder keeping verified downloads
    under their checksum (``<alg>-<hex>-<name>``); a file there with the right checksum is used
    without a request, whatever its name, and ``dest`` is a hard link to it (a copy across
    filesystems): rewriting one in place rewrites the other, which the next use of the entry
    detects and downloads again. ``progressbar``: pooch's progress bar on stderr.

    Raises NeurotrainError (one line): naming ``url`` for a scheme other than http(s), a
    malformed checksum, a checksum mismatch or a failed download (after ``retries``
    attempts); naming the cache folder when it cannot be written. Nothing is left at ``dest``
    on failure.
    """
    dest = Path(dest)
    _check_url(url)
    alg, digest = parse_hash(known_hash, url)
    if retries < 1:
        raise NeurotrainError(url, f"retries must be at least 1, got {retries}")
    if dest.is_file() and _file_hash(dest, alg) == digest:
        log.info("%s already present (%s ok)", dest, alg)
        return dest
    downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout, chunk_size=1 << 20)

    def attempt(folder: Path, name: str, where: Path) -> Path:
        last = "no attempt made"
        for n in range(1, retries + 1):
            try:
                return Path(pooch.retrieve(url, f"{alg}:{digest}", fname=name, path=folder,
                                           downloader=downloader, progressbar=progressbar))
            except (requests.exceptions.RequestException, ValueError, OSError) as exc:
                # requests' errors (also OSErrors), pooch's ValueError for a wrong checksum
                if isinstance(exc, OSError) and not isinstance(exc, requests.exceptions.RequestException):
                    raise NeurotrainError(where, f"cannot write the download: {exc.strerror or exc}") from None
                last = _why(exc, alg, digest)
                log.warning("download %s failed (attempt %d/%d): %s", url, n, retries, last)
                if _final(exc):
                    raise NeurotrainError(url, f"download failed: {last}") from None
                if n < retries:
                    time.sleep(backoff * n)
        raise NeurotrainError(url, f"download failed after {retries} attempts: {last}")

    if cache is not None:  # entries are named by checksum: any earlier name of the same bytes serves
        cache = Path(cache)
        earlier = sorted(p.name for p in cache.glob(f"{alg}-{digest}-*") if p.is_file()) if cache.is_dir() else []
        cached = attempt(cache, earlier[0] if earlier else f"{alg}-{digest}-{dest.name}", cache)
        _link_or_copy(cached, dest)
    else:  # into a private folder beside dest, made after atomic_path swept a killed run's temporaries
        with atomic_path(dest) as tmp:
            folder = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
            try:
                os.replace(attempt(folder, dest.name, dest.parent), tmp)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    log.info("downloaded %s -> %s (%s ok)", url, dest, alg)
    return dest

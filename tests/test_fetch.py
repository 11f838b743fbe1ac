"""Downloads (neurotrain.fetch, on pooch): md5 and sha256 checksums, retries, the download
cache, refusals. Every file comes from a loopback server the test starts: tests never reach
the internet."""

import hashlib
import subprocess

import pytest
import yaml
from conftest import NEUROTRAIN, snakemake_env, workflow_copy

from neurotrain.errors import NeurotrainError
from neurotrain.fetch import download, parse_hash

from _http import LoopbackServer  # noqa: I001 - tests/ helper

BODY = b"spike counts " * 4000
MD5 = hashlib.md5(BODY).hexdigest()
SHA256 = hashlib.sha256(BODY).hexdigest()


@pytest.fixture()
def server():
    s = LoopbackServer({"rat.bin": BODY})
    yield s
    s.close()


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _fetch(cwd, *args):
    r = subprocess.run([NEUROTRAIN, "fetch", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    return r, [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_md5_and_sha256_are_accepted(tmp_path, server):
    url = f"{server.url}/rat.bin"
    for i, checksum in enumerate([MD5, MD5.upper(), f"md5:{MD5}", f"sha256:{SHA256}", f"SHA256:{SHA256.upper()}",
                                  SHA256]):
        out = download(url, tmp_path / str(i) / "rat.bin", checksum, backoff=0)
        assert out.read_bytes() == BODY, checksum
    assert server.hits == 6
    assert parse_hash(f"sha256:{SHA256}") == ("sha256", SHA256) and parse_hash(MD5.upper()) == ("md5", MD5)
    for bad in ["", "md5:" + "g" * 32, "sha1:" + "0" * 40, "0" * 31, f"md5:{SHA256}"]:
        with pytest.raises(NeurotrainError, match="is not md5:<32 hex digits>, sha256:<64 hex digits>") as exc:
            download(url, tmp_path / "bad" / "rat.bin", bad)
        assert url in str(exc.value)
    assert server.hits == 6 and not (tmp_path / "bad").exists()


def test_wrong_checksum_is_refused_in_one_line_and_leaves_nothing(tmp_path, server):
    url = f"{server.url}/rat.bin"
    r, errors = _fetch(tmp_path, "--url", url, "--hash", "sha256:" + "0" * 64, "--retries", "2",
                       "--cache", "cache", "--out", "dl/rat.bin")
    assert r.returncode == 2, r.stderr
    assert errors == [f"error: {url}: download failed after 2 attempts: checksum mismatch: sha256 {SHA256}, "
                      f"expected {'0' * 64}"], r.stderr
    assert "Traceback" not in r.stderr and server.hits == 2  # a mismatch is tried again
    assert _files(tmp_path / "dl") == [] and _files(tmp_path / "cache") == [], "no output, no partial file"


def test_retries_after_server_errors_but_not_after_404(tmp_path):
    srv = LoopbackServer({"rat.bin": BODY, "other.bin": BODY[::-1]}, fail_first=2)
    try:
        out = download(f"{srv.url}/rat.bin", tmp_path / "dl" / "rat.bin", f"sha256:{SHA256}", retries=3, backoff=0,
                       cache=tmp_path / "cache")
        assert out.read_bytes() == BODY and srv.hits == 3  # two 503s, then the file
        srv.fail_left = 2
        with pytest.raises(NeurotrainError, match="download failed after 2 attempts: 503") as exc:
            download(f"{srv.url}/other.bin", tmp_path / "dl" / "other.bin", hashlib.md5(BODY[::-1]).hexdigest(),
                     retries=2, backoff=0, cache=tmp_path / "cache")
        assert f"{srv.url}/other.bin" in str(exc.value) and srv.hits == 5
        with pytest.raises(NeurotrainError, match="404") as exc:
            download(f"{srv.url}/absent.bin", tmp_path / "dl" / "absent.bin", MD5, retries=3, backoff=0,
                     cache=tmp_path / "cache")
        assert "absent.bin" in str(exc.value) and srv.hits == 6, "a missing file is not asked for again"
    finally:
        srv.close()
    assert _files(tmp_path / "dl") == ["rat.bin"] and len(_files(tmp_path / "cache")) == 1


def test_cache_hit_makes_no_request(tmp_path, server):
    url, cache = f"{server.url}/rat.bin", tmp_path / "cache"
    a = download(url, tmp_path / "a" / "rat.bin", f"md5:{MD5}", backoff=0, cache=cache)
    assert server.hits == 1 and a.read_bytes() == BODY
    b = download(url, tmp_path / "b" / "rat.bin", MD5, backoff=0, cache=cache)  # same checksum, another output
    assert server.hits == 1 and b.read_bytes() == BODY, "served from the cache"
    entries = _files(cache)
    assert entries == [f"md5-{MD5}-rat.bin"]
    # an entry whose bytes do not match (damaged, or replaced by hand) is downloaded again
    (cache / entries[0]).unlink()
    (cache / entries[0]).write_bytes(b"damaged")
    c = download(url, tmp_path / "c" / "rat.bin", MD5, backoff=0, cache=cache)
    assert server.hits == 2 and c.read_bytes() == BODY and (cache / entries[0]).read_bytes() == BODY
    assert a.read_bytes() == BODY and b.read_bytes() == BODY
    for folder in ("a", "b", "c"):
        assert _files(tmp_path / folder) == ["rat.bin"], "no temporary files beside the outputs"


def test_cli_cache_and_md5_flag(tmp_path, server):
    url = f"{server.url}/rat.bin"
    for out in ("dl/one.bin", "dl/two.bin"):
        r, errors = _fetch(tmp_path, "--url", url, "--md5", MD5, "--cache", "my cache", "--out", out)
        assert r.returncode == 0 and not errors, r.stderr
        assert (tmp_path / out).read_bytes() == BODY
    assert server.hits == 1 and _files(tmp_path / "my cache") == [f"md5-{MD5}-one.bin"]


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/rat.bin", "/etc/hostname"])
def test_non_http_addresses_are_refused(tmp_path, url):
    r, errors = _fetch(tmp_path, "--url", url, "--hash", MD5, "--cache", "cache", "--out", "dl/rat.bin")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(errors) == 1 and errors[0].startswith(f"error: {url}: only http(s) addresses are downloaded"), r.stderr
    assert "a local file is given by the source's own path key" in errors[0]
    assert not (tmp_path / "dl").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_fetch_rule_uses_the_configured_cache(tmp_path, server):
    """The fetch_dataset rule passes downloads.cache (a folder name with a space, quoted): a
    download removed from data/raw is written again from the cache, without a request."""
    wd = workflow_copy(tmp_path)
    (wd / "config" / "rat.yaml").write_text(yaml.safe_dump({
        "systems": ["cebra"], "downloads": {"cache": "data/download cache"},
        "cebra": {"data": {"source": "rat", "rat": {"names": ["achilles", "buddy"], "url": server.url + "/{name}.jl.gz",
                                                    "md5": {"achilles": MD5, "buddy": MD5}}}}}))
    server.files["achilles.jl.gz"] = BODY
    target = wd / "data" / "raw" / "cebra" / "download" / "achilles.jl.gz"
    cmd = ["snakemake", "--cores", "1", str(target.relative_to(wd)), "--configfile", "config/smoke.yaml",
           "config/rat.yaml"]
    for _ in range(2):
        r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=snakemake_env(), timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert target.read_bytes() == BODY
        target.unlink()
    assert server.hits == 1
    assert _files(wd / "data" / "download cache") == [f"md5-{MD5}-achilles.jl.gz"]

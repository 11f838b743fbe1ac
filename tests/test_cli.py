"""The `neurotrain` command as a user meets it first: its version, and a system that does not exist."""

import re
import subprocess
import tomllib
from pathlib import Path

from conftest import NEUROTRAIN, snakemake_env


def _run(*args, cwd=None):
    return subprocess.run([NEUROTRAIN, *args], capture_output=True, text=True, env=snakemake_env(), cwd=cwd, timeout=120)


def test_version_names_the_package_and_the_libraries_behind_its_numbers():
    r = _run("--version")
    assert r.returncode == 0, r.stderr
    want = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert r.stdout.startswith(f"neurotrain {want} (python 3.")
    for lib in ("torch", "cebra", "jax", "optax", "snakemake"):
        assert re.search(rf"\b{lib} \d", r.stdout), lib


def test_unknown_system_lists_the_systems_that_exist(tmp_path):
    (tmp_path / "c.yaml").write_text("systems: [ei_rnn]\n")
    r = _run("train", "--system", "foo", "--config", "c.yaml", "--data", "d.h5", "--out-dir", "m", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: system 'foo': unknown system (known: cebra, cpc_snn, ei_rnn, lisbet, ring_attractor)"
    assert not (tmp_path / "m").exists()


def test_apply_takes_one_file_per_name_where_the_schema_says_so(tmp_path):
    """`neurotrain apply --inputs a b`: refused in one line, before anything is read or written,
    for every system whose apply.inputs name one file each (all but LISBET, whose name may hold
    the recordings of one cage)."""
    for name in ("a.npy", "b.npy"):
        (tmp_path / name).write_bytes(b"")
    for system in ("ei_rnn", "cebra", "ring_attractor", "cpc_snn"):
        r = _run("apply", "--system", system, "--run-dir", "run", "--data", "d.h5", "--inputs", "a.npy", "b.npy",
                 "--out-dir", "out", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.strip() == (
            f"error: a.npy, b.npy: give one file per name (config key {system}.apply.inputs names one file each)"), r.stderr
        assert not (tmp_path / "out").exists()

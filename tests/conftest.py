"""Shared fixtures: the repository root, a tiny validated E-I RNN config, a tiny dataset."""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Tests mirror the code: tests/ (shared code), tests/systems/ (one file per system), tests/workflow/
# (Snakemake, resume, SLURM, adding a system). Their helpers import each other by module name.
for _sub in ("systems", "workflow"):
    sys.path.insert(0, str(Path(__file__).parent / _sub))
BIN = Path(sys.executable).parent
NEUROTRAIN = str(BIN / "neurotrain")

# XLA compiles the same jitted CPC+SNN steps in many test processes: JAX's persistent
# compilation cache (the same executables, so the same results) saves about 25 s per process.
# XLA's CPU executables are compiled for this CPU's instruction set: one folder per CPU model and
# flags, so a checkout moved to another machine never loads another CPU's entries.
def _cpu_key() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    lines = sorted({ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".pytest_cache" / f"jax-{_cpu_key()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# Downloads in the tests go to a server on 127.0.0.1 that the test starts: never through a proxy
# the environment may name (requests, under pooch, would otherwise send them there).
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(x for x in (os.environ.get(_var), "127.0.0.1", "localhost") if x)

# `make test` runs two pytest-xdist workers, one test file each at a time (--dist loadfile:
# module fixtures such as the smoke run are built once). The longest files go first so that
# neither worker is left with a long file at the end while the other idles.
LONGEST_FIRST = ("test_workflow.py", "test_resume.py", "test_slurm.py", "test_determinism.py", "test_cpc_snn.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def smoke_cfg() -> dict:
    from neurotrain.config import validate

    return validate(yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))["ei_rnn"]


@pytest.fixture()
def cfg(smoke_cfg) -> dict:
    return copy.deepcopy(smoke_cfg)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, smoke_cfg) -> dict:
    """A generated embedded dataset and its processed HDF5 (smoke sizes)."""
    from neurotrain.systems.ei_rnn.data import generate_embedded, preprocess_raw

    d = tmp_path_factory.mktemp("tiny")
    generate_embedded(smoke_cfg, d / "raw")
    preprocess_raw(smoke_cfg, d / "raw", d / "processed.h5")
    return {"raw": d / "raw", "mat": d / "raw" / "dataset.mat", "truth": d / "raw" / "truth.npz", "h5": d / "processed.h5"}


def seed_dir(system: str, run: str = "default", seed: int | None = None) -> str:
    """``results/<system>/<run>/seed<k>``, relative as Snakemake names it: the folder of one
    replicate (default: the default run's seed, the system's ``training.seed``)."""
    from neurotrain.config import system_defaults

    return f"results/{system}/{run}/seed{system_defaults(system)['training']['seed'] if seed is None else seed}"


def log_dir(system: str, run: str = "default", seed: int | None = None) -> str:
    """``results/logs/<system>/<run>/seed<k>``: the job logs of one replicate."""
    return "results/logs/" + seed_dir(system, run, seed).removeprefix("results/")


def workflow_copy(dest: Path) -> Path:
    """A scratch copy of the workflow (Snakefile, rules, profiles, config, envs; src linked)."""
    for name in ("Snakefile", "workflow", "profiles", "config", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    os.symlink(ROOT / "src", dest / "src")
    return dest


def refused_line(tmp_path: Path, r) -> str:
    """The one error line of a refused ``neurotrain preprocess`` run from ``tmp_path`` (exit 2,
    no traceback, nothing written under data/processed)."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    out = tmp_path / "data" / "processed"
    assert not out.exists() or not list(out.iterdir()), "no output, no temporary file"
    return lines[0]


def snakemake_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


TIMING_KEYS = {"training_time_s", "epoch_time", "elapsed", "steps_per_s", "time_s", "wall_time_s", "step_time_s"}


def strip_timings(node):
    """A JSON value without its timing fields (they differ between identical runs)."""
    if isinstance(node, dict):
        return {k: strip_timings(v) for k, v in node.items() if k not in TIMING_KEYS}
    if isinstance(node, list):
        return [strip_timings(v) for v in node]
    return node


def model_digests(path: Path) -> dict[str, str]:
    """sha256 of every array of a saved model, by name: every tensor of a torch checkpoint
    (nested dicts and lists; a CEBRA checkpoint's solver state), every array of an ``.npz``
    (its JSON ``__meta__`` with the timings removed)."""
    import hashlib
    import json

    import numpy as np
    import torch

    out = {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                data = z[k].tobytes()
                if k == "__meta__":
                    data = json.dumps(strip_timings(json.loads(data)), sort_keys=True).encode()
                out[k] = hashlib.sha256(data).hexdigest()
        return out

    def walk(prefix, node):
        if isinstance(node, torch.Tensor):
            out[prefix] = hashlib.sha256(node.detach().contiguous().numpy().tobytes()).hexdigest()
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)

    walk("", torch.load(path, map_location="cpu", weights_only=True))
    return out

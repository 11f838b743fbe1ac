"""`make verify`: run the whole workflow twice from scratch, each in its own scratch copy of the
checkout, and compare every array both runs wrote (every .npy, every tensor and array of every
saved model and checkpoint) and every metrics.json without its timings.

    python benchmarks/verify_determinism.py [--configfile config/config.yaml] [--cores 2]

Prints one line per differing array (none when the runs agree) and exits 1 if any differs. The
default config takes about twice the `make run` time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import model_digests, strip_timings  # noqa: E402


def digests(results: Path) -> dict[str, str]:
    import numpy as np

    out = {}
    for f in sorted(results.rglob("*")):
        rel = f.relative_to(results).as_posix()
        if rel.startswith(("logs/", "benchmarks/")):
            continue
        if f.suffix == ".npy":
            out[rel] = hashlib.sha256(np.load(f, allow_pickle=False).tobytes()).hexdigest()
        elif f.suffix in (".pt", ".npz"):
            out.update({f"{rel}:{k}": v for k, v in model_digests(f).items()})
        elif f.name == "metrics.json":
            out[rel] = hashlib.sha256(json.dumps(strip_timings(json.loads(f.read_text())), sort_keys=True)
                                      .encode()).hexdigest()
    return out


def run_once(config: str, cores: int, where: Path) -> dict[str, str]:
    for name in ("Snakefile", "workflow", "profiles", "config", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, where / name)
    shutil.copytree(ROOT / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "snakemake"), "--cores", str(cores), "--configfile", config], cwd=where, check=True)
    return digests(where / "results")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default="config/config.yaml")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        a = run_once(args.configfile, args.cores, Path(tmp, "a").mkdir() or Path(tmp, "a"))
        b = run_once(args.configfile, args.cores, Path(tmp, "b").mkdir() or Path(tmp, "b"))
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.endswith(":__meta__"))
    for k in differ:
        print(f"differs: {k}")
    print(f"{len(a)} arrays compared, {len(differ)} differ ({args.configfile}, {args.cores} cores)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

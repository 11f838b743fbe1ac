"""``python -m neurotrain.workflow_lock``: before ``make run``, free the working directory from a
Snakemake that was killed (a time limit, a closed laptop, ``kill``). Such a Snakemake leaves its
lock in ``.snakemake/locks``, and the next run stops with LockException until ``--unlock``. When
no Snakemake process is running in this folder, the stale lock is removed (``snakemake
--unlock``); when one is, this says so in one line and exits 1, touching nothing. (Jobs that
were running are marked incomplete; the workstation profile's ``rerun-incomplete`` reruns
them, and training resumes from its checkpoint.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil


def running_snakemakes(folder: Path) -> list[psutil.Process]:
    """Snakemake processes (other than this one's ancestors) whose working directory is ``folder``."""
    folder = folder.resolve()
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd, cwd = p.info["cmdline"] or [], p.info["cwd"]
        except psutil.Error:
            continue
        if p.pid in mine or not cwd or Path(cwd).resolve() != folder:
            continue
        if any(Path(part).name == "snakemake" for part in cmd[:2]):
            found.append(p)
    return found


def main(argv=None) -> int:
    folder = Path.cwd()
    locks = folder / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return 0
    live = running_snakemakes(folder)
    if live:
        print(f"error: another Snakemake (pid {live[0].pid}) is running in {folder}: let it finish or stop it, "
              "then run again", file=sys.stderr)
        return 1
    snakemake = Path(sys.executable).parent / "snakemake"
    r = subprocess.run([str(snakemake if snakemake.exists() else "snakemake"), "--unlock", "--cores", "1",
                        *(argv if argv is not None else sys.argv[1:])], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"error: {locks}: cannot remove the stale lock: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return 1
    print(f"removed the lock a stopped Snakemake left in {locks}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

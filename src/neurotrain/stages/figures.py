"""Stage figures: render the system's matplotlib PNGs into <run-dir>/figures."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--run-dir", required=True, help="run folder with model/, metrics/, ...")


def run(cfg, args):
    import matplotlib

    matplotlib.use("Agg")
    entry(args.system, "figures")(cfg, args.run_dir)


if __name__ == "__main__":
    sys.exit(stage_main("figures", DOC, add_args, run))

"""Stage analyze: per-neuron metrics, PCA, Fano factors and the system's scores."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--run-dir", required=True, help="run folder with weights/ and outputs/")
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--truth", default=None, help="ground truth of an embedded dataset (optional)")


def run(cfg, args):
    entry(args.system, "analyze")(cfg, args.run_dir, args.data, args.truth)


if __name__ == "__main__":
    sys.exit(stage_main("analyze", DOC, add_args, run))

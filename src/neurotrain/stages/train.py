"""Stage train: train a system on its processed dataset, resuming from an interrupted run."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--out-dir", required=True, help="model folder, e.g. results/ei_rnn/model")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")


def run(cfg, args):
    entry(args.system, "train")(cfg, args.data, args.out_dir, args.threads)


if __name__ == "__main__":
    sys.exit(stage_main("train", DOC, add_args, run))

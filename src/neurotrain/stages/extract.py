"""Stage extract: weights and model outputs as .npy, from the saved best checkpoint."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--model-dir", required=True, help="folder with model_best.pt")
    p.add_argument("--data", required=True, help="processed HDF5")
    p.add_argument("--out-dir", required=True, help="run folder: weights/ and outputs/ are written in it")


def run(cfg, args):
    entry(args.system, "extract")(cfg, args.model_dir, args.data, args.out_dir)


if __name__ == "__main__":
    sys.exit(stage_main("extract", DOC, add_args, run))

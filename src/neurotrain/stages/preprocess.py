"""Stage preprocess: check a raw dataset and write the system's standard HDF5 layout."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--raw", required=True, nargs="+", help="raw dataset: file(s), or the folder `generate` wrote")
    p.add_argument("--out", required=True, help="processed HDF5 to write, e.g. data/processed/ei_rnn.h5")


def run(cfg, args):
    entry(args.system, "preprocess")(cfg, args.raw, args.out)


if __name__ == "__main__":
    sys.exit(stage_main("preprocess", DOC, add_args, run))

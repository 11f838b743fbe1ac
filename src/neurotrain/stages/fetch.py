"""Stage fetch: download one file of a system's real dataset, checksum verified, atomically."""

from __future__ import annotations

import sys

from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--name", required=True, help="file name, e.g. achilles.jl.gz")
    p.add_argument("--out", required=True, help="where to write it, e.g. data/raw/cebra/download/achilles.jl.gz")


def run(cfg, args):
    entry(args.system, "fetch")(cfg, args.name, args.out)


if __name__ == "__main__":
    sys.exit(stage_main("fetch", DOC, add_args, run))

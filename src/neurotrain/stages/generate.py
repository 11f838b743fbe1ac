"""Stage generate: write a system's embedded dataset and its ground truth into a folder."""

from __future__ import annotations

import sys

from ..io import atomic_dir
from ..registry import entry
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--out-dir", required=True, help="folder to create, e.g. data/raw/ei_rnn/embedded")


def run(cfg, args):
    with atomic_dir(args.out_dir) as tmp:
        entry(args.system, "generate")(cfg, tmp)


if __name__ == "__main__":
    sys.exit(stage_main("generate", DOC, add_args, run))

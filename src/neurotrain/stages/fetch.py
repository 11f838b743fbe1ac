"""Stage fetch: download one file of a real dataset, md5 verified, retried, written atomically.

Not tied to a system: the workflow passes each file's address and checksum (from the
system's config block) so that changing one file's entry refetches only that file.
"""

from __future__ import annotations

import argparse
import sys

from ..data.fetch import download
from ._common import guarded

DOC = __doc__


def add_args(p):
    p.add_argument("--url", required=True, help="address of the file")
    p.add_argument("--md5", required=True, help="expected md5 (hex)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--out", required=True, help="where to write it, e.g. data/raw/cebra/download/achilles.jl.gz")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="neurotrain fetch", description=DOC)
    add_args(p)
    args = p.parse_args(argv)
    return guarded(lambda: download(args.url, args.out, args.md5, retries=args.retries))


if __name__ == "__main__":
    sys.exit(main())

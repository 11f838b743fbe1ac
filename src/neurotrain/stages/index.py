"""Stage index: render the project report results/report.md over the finished systems."""

from __future__ import annotations

import argparse
import sys

from ..reports.index import render_index
from ._common import guarded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="neurotrain index", description=__doc__)
    p.add_argument("--systems", required=True, help="comma-separated systems, in report order")
    p.add_argument("--results", default="results", help="results folder (one sub-folder per system)")
    p.add_argument("--out", default="results/report.md")
    args = p.parse_args(argv)
    return guarded(lambda: render_index([s for s in args.systems.split(",") if s], args.results, args.out))


if __name__ == "__main__":
    sys.exit(main())

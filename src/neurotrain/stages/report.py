"""Stage report: render <run-dir>/training_report.md from the system's Jinja template."""

from __future__ import annotations

import sys

from ..reports.render import render_report
from ._common import stage_main

DOC = __doc__


def add_args(p):
    p.add_argument("--run-dir", required=True, help="run folder")
    p.add_argument("--out", default=None, help="report path (default <run-dir>/training_report.md)")


def run(cfg, args):
    render_report(args.system, cfg, args.run_dir, args.out)


if __name__ == "__main__":
    sys.exit(stage_main("report", DOC, add_args, run))

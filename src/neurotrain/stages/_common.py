"""Shared argument handling and error reporting of the stage commands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from ..config import system_slice
from ..errors import Interrupted, NeurotrainError


def base_parser(stage: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"neurotrain {stage}", description=doc)
    p.add_argument("--system", required=True, help="system name, e.g. ei_rnn")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="YAML config file (the system's block is used; defaults filled)")
    src.add_argument("--params", help="the system's config block as JSON (what the Snakemake rules pass)")
    return p


def guarded(fn: Callable[[], object]) -> int:
    """Run ``fn``; user errors print one line and return 2 (3: diverged, 128+n: signal n)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    try:
        fn()
    except NeurotrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr)
        return 3
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    return 0


def run_stage(args: argparse.Namespace, run: Callable[[dict, argparse.Namespace], object]) -> int:
    """Validate the system's config slice, then run the stage under :func:`guarded`."""
    return guarded(lambda: run(system_slice(args.system, args.config, args.params), args))


def stage_main(stage: str, doc: str, add_args: Callable, run: Callable, argv=None) -> int:
    p = base_parser(stage, doc)
    add_args(p)
    return run_stage(p.parse_args(argv), run)

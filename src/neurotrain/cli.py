"""``neurotrain``: the stages as subcommands, so the package works without Snakemake.

    neurotrain generate   --system ei_rnn --config config/config.yaml --out-dir data/raw/ei_rnn/embedded
    neurotrain preprocess --system ei_rnn --config ... --raw data/raw/ei_rnn/embedded --out data/processed/ei_rnn.h5
    neurotrain train      --system ei_rnn --config ... --data data/processed/ei_rnn.h5 --out-dir results/ei_rnn/model
    neurotrain extract | analyze | figures | report ...
"""

from __future__ import annotations

import argparse
import importlib
import sys

STAGES = ("generate", "fetch", "preprocess", "train", "extract", "analyze", "figures", "report")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        p = argparse.ArgumentParser(prog="neurotrain", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("stage", choices=STAGES)
        p.parse_args(argv[:1])
        return 2
    mod = importlib.import_module(f"neurotrain.stages.{argv[0]}")
    if hasattr(mod, "main"):  # stages with their own arguments (fetch)
        return mod.main(argv[1:])
    from .stages._common import stage_main

    return stage_main(argv[0], mod.DOC, mod.add_args, mod.run, argv[1:])


if __name__ == "__main__":
    sys.exit(main())

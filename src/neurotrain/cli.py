"""``neurotrain``: the stages as subcommands, so the package works without Snakemake.

    neurotrain generate   --system ei_rnn --config config/config.yaml --out-dir data/raw/ei_rnn/embedded
    neurotrain preprocess --system ei_rnn --config ... --raw data/raw/ei_rnn/embedded --out data/processed/ei_rnn.h5
    neurotrain train      --system ei_rnn --config ... --data data/processed/ei_rnn.h5 --out-dir results/ei_rnn/default/seed42/model
    neurotrain extract | analyze | figures | report | fetch | index ...

The same runner as the Snakemake rules (:mod:`neurotrain.runner`).
"""

from neurotrain.runner import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())

"""The command-line modules the Snakemake rules call, one per stage (``python -m
neurotrain.stages.<stage> --system NAME ...``). Each runs on its own from the shell with plain
arguments; ``neurotrain <stage>`` is the same command."""

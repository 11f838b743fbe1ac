"""neurotrain: a reproducible workflow that trains neuroscience models and analyses what they learned.

Subpackages by responsibility: ``data`` (datasets, loaders, generators), ``systems`` (pure
model code), ``training`` (one loop per framework, checkpoints), ``analysis`` (extraction and
metrics), ``figures``, ``reports``; ``stages`` holds the small command-line modules that the
Snakemake rules call, one per stage.
"""

__version__ = "0.1.0"

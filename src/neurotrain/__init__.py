"""neurotrain: a reproducible workflow that trains neuroscience models and analyses what they learned.

Subpackages by responsibility: ``data`` (datasets, loaders, generators), ``systems`` (pure
model code), ``training`` (one loop per framework, checkpoints), ``analysis`` (extraction and
metrics), ``figures``, ``reports``; ``stages`` holds the small command-line modules that the
Snakemake rules call, one per stage.
"""

__version__ = "0.1.0"

import os as _os

# Bitwise reproducibility on CPU (runs, resumed runs, reruns): Intel MKL, torch's BLAS here,
# gives run-to-run identical results only with a fixed code path and thread count (its
# "conditional numerical reproducibility"); OpenMP must not shrink its team under load either.
# Set before torch or numpy load MKL; a user's own values win.
for _key, _value in (("MKL_CBWR", "AUTO"), ("MKL_DYNAMIC", "FALSE"), ("OMP_DYNAMIC", "FALSE")):
    _os.environ.setdefault(_key, _value)
del _os, _key, _value

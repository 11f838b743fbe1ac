"""neurotrain: a reproducible workflow that trains neuroscience models and analyses what they learned.

``systems/<name>/`` holds everything one system owns (spec, config schema, data, network,
training task, extraction, analysis, figures, report); the shared code knows no system:
``runner`` (the one stage runner the Snakemake rules call), ``registry`` and ``codedeps`` (what
the workflow computes from the systems), ``config``, ``training`` (one loop per framework, one
checkpoint mechanism), ``io``, ``stats``, ``plotting``, ``reports``. See docs/adding-a-system.md.
"""

__version__ = "0.1.0"

import os as _os

# Bitwise reproducibility on CPU (runs, resumed runs, reruns): Intel MKL, torch's BLAS here,
# gives run-to-run identical results only with a fixed code path and thread count (its
# "conditional numerical reproducibility"); OpenMP must not shrink its team under load either.
# Set before torch or numpy load MKL; a user's own values win.
for _key, _value in (("MKL_CBWR", "AUTO"), ("MKL_DYNAMIC", "FALSE"), ("OMP_DYNAMIC", "FALSE")):
    _os.environ.setdefault(_key, _value)


def _keep_freed_memory() -> None:
    """glibc's malloc hands large blocks (the activations of a training step: tens of MB) back to
    the kernel when they are freed and maps them afresh at the next step, so every step pays
    tens of thousands of page faults (up to a fifth of a LISBET inference batch's wall time,
    measured). Serve blocks up to 32 MB from the heap and keep up to 1 GB of freed heap instead.
    Skipped if the user set glibc's MALLOC_* variables or the C library is not glibc."""
    import os

    if any(k.startswith("MALLOC_") for k in os.environ) or os.environ.get("GLIBC_TUNABLES"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(M_TRIM_THRESHOLD, 2**30)


_keep_freed_memory()
del _os, _key, _value, _keep_freed_memory

"""Test hook, imported at start-up by every Python process that has this folder on PYTHONPATH:
a stage runner (``python -m neurotrain.runner <stage>``) whose stage is named in
``NEUROTRAIN_TEST_KILL=<stage>:<n>`` kills itself with SIGKILL just before its n-th atomic rename
(``os.replace``), so it dies mid-write with its temporaries on disk, as a job does when a node is
lost or the OOM killer strikes. Every other process (Snakemake itself) is untouched."""

import os
import signal
import sys

_want = os.environ.get("NEUROTRAIN_TEST_KILL", "")
_argv = getattr(sys, "orig_argv", [])
if ":" in _want and "neurotrain.runner" in _argv:
    _stage, _n = _want.split(":")
    if _argv[_argv.index("neurotrain.runner") + 1:][:1] == [_stage]:
        _left = [int(_n)]
        _replace = os.replace

        def _replace_or_die(src, dst, *args, **kwargs):
            _left[0] -= 1
            if _left[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return _replace(src, dst, *args, **kwargs)

        os.replace = _replace_or_die

"""The CPU threads of one stage, the same whatever Snakemake or the machine allots.

A training job uses exactly ``<system>.training.threads`` threads; every other stage one. The
count is part of the config, not of the machine, because in some kernels it decides the order
of floating-point sums: measured on an AMD EPYC, the E-I RNN's and LISBET's weights after a few
epochs differ in their last digits between 1 and 2 threads, and CPC+SNN's (JAX) after CPC
pre-training by up to 1e-2, while CEBRA and the ring attractor were bit-identical at either count.
A run's numbers therefore do not depend on ``snakemake --cores`` or on the number of cores of the
machine (before, JAX used every CPU the machine has).

- torch: ``torch.set_num_threads``, and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for libraries
  imported later.
- JAX (XLA's CPU client) has no setting for it: it sizes its thread pool from the CPUs the
  process may run on when the client starts (the affinity mask; jax-ml/jax#1539). The client is
  started with the mask cut to ``n`` CPUs, and then every thread of the process gets the whole
  mask back: the pool keeps ``n`` threads, which the operating system places on any CPU. A
  process allowed fewer than ``n`` CPUs (taskset, a cgroup) cannot get ``n``: it is warned.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def training_threads(block) -> int:
    """The CPU threads of a system's training job: its config block's ``training.threads``; 1 for
    a system whose schema has no such key."""
    return int((block.get("training") or {}).get("threads", 1))


def limit_threads(n: int, jax_backend: bool = False) -> None:
    """Use ``n`` (>= 1) CPU threads from here on. ``jax_backend``: also start JAX's CPU client
    now, with a pool of ``n`` threads (only before anything else has started it; afterwards its
    pool keeps the size it has). Raises ValueError for ``n < 1``."""
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    for k in _ENV:
        os.environ[k] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if jax_backend:
        _start_jax(n)


def _start_jax(n: int) -> None:
    if not hasattr(os, "sched_setaffinity"):  # not Linux: JAX's own default
        return
    # by name: a static import here would count JAX among the imports of every stage (the rules'
    # code inputs and conda envs); only JAX systems' stages get here, and they import it anyway
    allowed = os.sched_getaffinity(0)
    if n >= len(allowed):
        if n > len(allowed):  # XLA cannot be given more threads than the CPUs it may use
            logging.getLogger("neurotrain").warning(
                "training.threads is %d but this process may use %d CPU(s): JAX runs %d thread(s), and its "
                "numbers are those of training.threads: %d", n, len(allowed), len(allowed), len(allowed))
        importlib.import_module("jax").devices("cpu")
        return
    os.sched_setaffinity(0, sorted(allowed)[:n])
    try:
        importlib.import_module("jax").devices("cpu")  # starts the client: its pool is sized from the mask now
    finally:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), allowed)
            except OSError:  # a thread that ended meanwhile
                pass

"""Which code implements each stage of each system.

Entries are ``"module:function"`` strings, imported only when a stage runs, so a torch system
never imports JAX and the Snakefile can read this file without heavy imports. Every stage
function takes the system's validated config block first:

    generate(cfg, out_dir)                     embedded dataset + ground truth into out_dir
    preprocess(cfg, raw, out)                  raw file -> processed HDF5
    train(cfg, data, out_dir, threads)         -> model/ (checkpoints, training_log.json, config.json)
    extract(cfg, model_dir, data, out_dir)     -> weights/, outputs/
    analyze(cfg, run_dir, data, truth)         -> metrics/, population/, metrics.json
    figures(cfg, run_dir)                      -> figures/
"""

from __future__ import annotations

import importlib
from typing import Callable

from .errors import NeurotrainError

SYSTEMS: dict[str, dict[str, str]] = {
    "ei_rnn": {
        "framework": "torch",
        "generate": "neurotrain.data.ei_rnn:generate_embedded",
        "preprocess": "neurotrain.data.ei_rnn:preprocess_raw",
        "train": "neurotrain.systems.ei_rnn:run_training",
        "extract": "neurotrain.extraction.ei_rnn:extract",
        "analyze": "neurotrain.analysis.ei_rnn:analyze",
        "figures": "neurotrain.figures.ei_rnn:render",
        "template": "ei_rnn.md.j2",
    },
    "cebra": {
        "framework": "torch",
        "generate": "neurotrain.data.cebra:generate_embedded",
        "preprocess": "neurotrain.data.cebra:preprocess_raw",
        "train": "neurotrain.systems.cebra:run_training",
        "extract": "neurotrain.extraction.cebra:extract",
        "analyze": "neurotrain.analysis.cebra:analyze",
        "figures": "neurotrain.figures.cebra:render",
        "template": "cebra.md.j2",
    },
    "ring_attractor": {
        "framework": "torch",
        "generate": "neurotrain.data.ring_attractor:generate_embedded",
        "preprocess": "neurotrain.data.ring_attractor:preprocess_raw",
        "train": "neurotrain.systems.ring_attractor:run_training",
        "extract": "neurotrain.extraction.ring_attractor:extract",
        "analyze": "neurotrain.analysis.ring_attractor:analyze",
        "figures": "neurotrain.figures.ring_attractor:render",
        "template": "ring_attractor.md.j2",
    },
    "lisbet": {
        "framework": "torch",
        "generate": "neurotrain.data.lisbet:generate_embedded",
        "preprocess": "neurotrain.data.lisbet:preprocess_raw",
        "train": "neurotrain.systems.lisbet:run_training",
        "extract": "neurotrain.extraction.lisbet:extract",
        "analyze": "neurotrain.analysis.lisbet:analyze",
        "figures": "neurotrain.figures.lisbet:render",
        "template": "lisbet.md.j2",
    },
    "cpc_snn": {
        "framework": "jax",
        "generate": "neurotrain.data.cpc_snn:generate_embedded",
        "preprocess": "neurotrain.data.cpc_snn:preprocess_raw",
        "train": "neurotrain.systems.cpc_snn:run_training",
        "extract": "neurotrain.extraction.cpc_snn:extract",
        "analyze": "neurotrain.analysis.cpc_snn:analyze",
        "figures": "neurotrain.figures.cpc_snn:render",
        "template": "cpc_snn.md.j2",
    },
}


def entry(system: str, stage: str) -> Callable:
    """The function implementing ``stage`` for ``system``."""
    if system not in SYSTEMS:
        raise NeurotrainError(f"system {system!r}", f"unknown system (known: {', '.join(sorted(SYSTEMS))})")
    if stage not in SYSTEMS[system]:
        raise NeurotrainError(f"system {system!r}", f"has no {stage} stage")
    module, func = SYSTEMS[system][stage].split(":")
    return getattr(importlib.import_module(module), func)

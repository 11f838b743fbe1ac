"""The systems: every folder ``systems/<name>/`` with a ``spec.py`` is one (see
:mod:`neurotrain.spec`). A new system is a new folder; nothing else lists it.

This module imports neither torch nor JAX: the Snakefile reads it for every job. Entry
functions are imported only when a stage runs, so a torch system never imports JAX.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Callable

from neurotrain.codedeps import closure
from neurotrain.errors import NeurotrainError
from neurotrain.spec import SystemSpec, lineage

SYSTEMS_DIR = Path(__file__).absolute().parent / "systems"
RUNNER = "neurotrain.runner"  # the module every rule runs (python -m neurotrain.runner <stage>)


def names() -> list[str]:
    """Every registered system, sorted (looked up once per process: the Snakefile asks hundreds of times)."""
    return list(_names(SYSTEMS_DIR))


@functools.lru_cache(maxsize=None)
def _names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in folder.glob("*/spec.py")))


def spec(system: str) -> SystemSpec:
    """The :class:`SystemSpec` of ``system``; unknown names are a NeurotrainError listing the known ones."""
    if system not in names():
        raise NeurotrainError(f"system {system!r}", f"unknown system (known: {', '.join(names())})")
    s = importlib.import_module(f"neurotrain.systems.{system}.spec").SPEC
    if s.name != system:
        raise NeurotrainError(SYSTEMS_DIR / system / "spec.py", f"SPEC.name is {s.name!r}, not the folder's name")
    return s


def entry(system: str, stage: str) -> Callable:
    """The function implementing ``stage`` for ``system``."""
    s = spec(system)
    if stage not in s.stages:
        raise NeurotrainError(f"system {system!r}", f"has no {stage} stage")
    return load_entry(system, s.stages[stage].entry)


def load_entry(system: str, entry_string: str) -> Callable:
    """The function named by ``"module:function"`` (a module starting with ``.`` is inside the
    system's folder), imported without importing the system's spec: a rule passes the entry
    string, so a stage runs only the code that its rule lists as inputs."""
    if system not in names():
        raise NeurotrainError(f"system {system!r}", f"unknown system (known: {', '.join(names())})")
    module, _, func = entry_string.partition(":")
    if module.startswith("."):
        module = f"neurotrain.systems.{system}{module}"
    return getattr(importlib.import_module(module), func)


def stage_code(system: str, stage: str) -> list[Path]:
    """Source files ``stage`` of ``system`` runs: the closure of the runner and of the entry
    module, and the stage's declared files (templates). Code inputs of the stage's rule. The
    spec itself is not among them: the rule passes what the stage takes from it (entry, config
    keys, files) as params, so a changed caption does not retrain."""
    s = spec(system)
    st = s.stages[stage]
    files = set(closure(RUNNER)) | set(closure(s.module(st.entry)[0]))
    files.update(SYSTEMS_DIR / system / f for f in st.files)
    return sorted(files)


def provenance_code(system: str, stage: str) -> list[Path]:
    """The code inputs of a stage's rule: the code of the stage and of every stage its artifacts
    derive from (:func:`neurotrain.spec.lineage`). So an artifact is out of date as soon as any
    code behind it changes, even when an intermediate artifact went missing in between (a job
    killed after an edit: Snakemake deletes its outputs, and does not rebuild a missing
    intermediate whose downstream files look current)."""
    files = set(stage_code(system, stage))
    for up in lineage(stage):
        files.update(stage_code(system, up))
    return sorted(files)


def shared_code(module: str) -> list[Path]:
    """Source files of a stage that belongs to no system (fetch, the project report)."""
    return sorted(set(closure(RUNNER)) | set(closure(module)))


def stage_spec(system: str, stage: str) -> dict:
    """What the runner takes from the spec, as the rule passes it (``--stage-spec``)."""
    sp = spec(system)
    st = sp.stages[stage]
    return {"entry": st.entry, "reads": list(st.reads),
            "files": [str(SYSTEMS_DIR / system / f) for f in st.files],
            "jax": sp.framework == "jax" and stage in sp.framework_stages}  # the stage starts JAX's CPU client


def report_module(system: str):
    """The module named by the spec's ``headline``: ``headline(metrics)`` rows and ``verdict(metrics)``."""
    s = spec(system)
    return importlib.import_module(s.report_module)


def aggregate_code(system: str) -> list[Path]:
    """Source files behind a run's pooled report (rule aggregate_run): the aggregate module, its
    template, the system's report module and spec, and every code behind the seeds' reports."""
    files = set(shared_code("neurotrain.reports.aggregate"))
    files.add(Path(__file__).absolute().parent / "reports" / "templates" / "run_report.md.j2")
    s = spec(system)  # the title, the report module (headline, verdict, curves)
    files.update(closure(s.report_module))
    files.update(closure(f"{s.package}.spec"))
    files.update(provenance_code(system, "report"))
    return sorted(files)


def index_code(systems: list[str]) -> list[Path]:
    """Source files of the project report: its own closure, its templates and, for every listed
    system, the code behind its runs' pooled reports."""
    files = set(shared_code("neurotrain.reports.index"))
    for template in ("index.md.j2", "summary.html.j2", "runs.md.j2"):
        files.add(Path(__file__).absolute().parent / "reports" / "templates" / template)
    for system in systems:
        files.update(aggregate_code(system))
    return sorted(files)


def stage_env(system: str, stage: str) -> str:
    """Name of the conda environment (``envs/<name>.yaml``) of ``stage``: the system's framework
    for its ``framework_stages`` (train, extract and apply load the model), ``analysis`` for the others."""
    s = spec(system)
    return s.framework if stage in s.framework_stages else "analysis"

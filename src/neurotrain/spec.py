"""What a system declares about itself, read by the workflow without importing torch or JAX.

Each system folder ``systems/<name>/`` has a ``spec.py`` that defines ``SPEC``, a
:class:`SystemSpec`. The Snakemake rules and the stage runner take everything system-specific
from it: the framework (which training rule and conda environment), the entry function of each
stage, the config keys each stage reads (its config slice), the real-data sources (downloads
and the user's own files), the figure captions of ``snakemake --report`` and the project
report's headline rows. Code inputs are not declared: they are the import closure of each
stage's entry module (:mod:`neurotrain.codedeps`).

Stage entry functions (``cfg`` is the stage's strict config slice, see
:class:`neurotrain.config.StrictConfig`)::

    generate(cfg, out_dir)                     embedded dataset + ground truth into out_dir
    preprocess(cfg, raw, out)                  raw file(s) -> processed HDF5
    train(cfg, data, out_dir, threads)         -> model/ (checkpoints, training_log.json, config.json)
    extract(cfg, model_dir, data, out_dir)     -> weights/, outputs/
    analyze(cfg, run_dir, data, truth)         -> metrics/, population/, metrics.json
    figures(cfg, run_dir)                      -> figures/
    report                                     the system's ``report.md.j2`` (rendered by
                                               neurotrain.reports.render with ``cfg``)
    apply(cfg, run_dir, data, inputs, out_dir) optional: the trained model on new input files
                                               (``<system>.apply.inputs``) -> results/<system>/<run>/seed<k>/apply/<name>/
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

STAGES = ("generate", "preprocess", "train", "extract", "analyze", "figures", "report")
# Stages a system may leave out (the workflow then offers no such target for it).
OPTIONAL_STAGES = ("apply",)
# The stages whose artifacts each stage reads (the rules' file inputs say the same).
INPUTS_FROM = {"generate": (), "preprocess": ("generate",), "train": ("preprocess",),
               "extract": ("preprocess", "train"), "analyze": ("generate", "preprocess", "extract"),
               "figures": ("train", "extract", "analyze"), "report": ("analyze", "figures"),
               "apply": ("preprocess", "train", "extract", "analyze")}


def lineage(stage: str) -> tuple[str, ...]:
    """Every stage whose artifacts ``stage``'s artifacts derive from, in stage order."""
    seen: set[str] = set()
    todo = list(INPUTS_FROM[stage])
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(INPUTS_FROM[s])
    return tuple(s for s in (*STAGES, *OPTIONAL_STAGES) if s in seen)
FRAMEWORKS = {"torch": "pt", "jax": "npz"}  # framework -> checkpoint file extension


@dataclass(frozen=True)
class Stage:
    """One stage of a system.

    ``entry`` is ``"module:function"``; a module starting with ``.`` is inside the system's
    folder (``".train:run_training"``). ``reads`` lists the config keys the stage reads,
    dotted under the system's block (``"training"`` is the whole block, ``"training.seed"`` one
    key); the stage gets exactly these and reading any other raises. ``files`` are other files
    the stage reads, relative to the system's folder (a report template).
    """

    entry: str
    reads: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


# The entry functions of a system folder laid out as docs/adding-a-system.md describes.
CONVENTIONAL_ENTRIES = {"generate": ".data:generate_embedded", "preprocess": ".data:preprocess_raw",
                        "train": ".train:run_training", "extract": ".extract:extract", "analyze": ".analyze:analyze",
                        "figures": ".figures:render", "report": "neurotrain.reports.render:render_report",
                        "apply": ".apply:apply"}


def conventional_stages(**reads: tuple[str, ...]) -> dict[str, Stage]:
    """Every stage at its conventional entry (``CONVENTIONAL_ENTRIES``; the report renders the
    folder's ``report.md.j2``), each declaring the config keys given for it by stage name:
    ``conventional_stages(train=("model", "training"), analyze=("analysis",))``.
    An optional stage (``apply``) is there when keys are given for it.
    """
    unknown = set(reads) - set(STAGES) - set(OPTIONAL_STAGES)
    if unknown:
        raise ValueError(f"no stage {', '.join(sorted(unknown))} (stages: {', '.join(STAGES + OPTIONAL_STAGES)})")
    return {st: Stage(CONVENTIONAL_ENTRIES[st], tuple(reads.get(st, ())),
                      files=("report.md.j2",) if st == "report" else ())
            for st in (*STAGES, *(o for o in OPTIONAL_STAGES if o in reads))}


@dataclass(frozen=True)
class Source:
    """A real-data source (``<system>.data.source``): ``downloads(data_block)`` returns
    ``{filename: {"url", "md5", "retries"}}`` (or ``"hash"``: ``md5:<hex>``/``sha256:<hex>``
    instead of ``"md5"``) fetched into ``data/raw/<system>/download/``;
    or ``user_files`` is the key path under ``data`` that holds the user's path(s)."""

    downloads: Callable[[dict], dict[str, dict]] | None = None
    user_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class SystemSpec:
    name: str
    title: str
    seed: str  # the seed document in ../shared/seeds
    framework: str  # a key of FRAMEWORKS
    stages: dict[str, Stage]
    sources: dict[str, Source] = field(default_factory=dict)  # besides "embedded"
    captions: dict[str, str] = field(default_factory=dict)  # figure name (no .png) -> caption
    headline: str = ".report"  # module with headline(metrics) -> rows and verdict(metrics) for the project report
    # stages that load the model or the framework's libraries, so run in the framework's conda env
    # (envs/<framework>.yaml); the others run in envs/analysis.yaml
    framework_stages: tuple[str, ...] = ("train", "extract", "apply")
    # minutes the default config's training takes on one thread of a 2-core AMD EPYC (measured
    # 2026-11-30); only orders jobs: the workflow starts the longest chains first
    train_minutes: int = 1

    def __post_init__(self):
        if self.framework not in FRAMEWORKS:
            raise ValueError(f"system {self.name}: framework {self.framework!r} is not one of {sorted(FRAMEWORKS)}")
        missing = [s for s in STAGES if s not in self.stages]
        if missing:
            raise ValueError(f"system {self.name}: no stage {', '.join(missing)}")

    @property
    def package(self) -> str:
        return f"neurotrain.systems.{self.name}"

    @property
    def report_module(self) -> str:
        """The absolute name of the module ``headline`` names."""
        return self.package + self.headline if self.headline.startswith(".") else self.headline

    def module(self, entry: str) -> tuple[str, str]:
        """(absolute module, function) of an entry string."""
        module, _, func = entry.partition(":")
        return (self.package + module if module.startswith(".") else module), func

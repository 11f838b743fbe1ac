"""The run sheet: named runs of a system, each with config overrides and a list of seeds.

A run is what a user compares: a name, a system, overrides of that system's config block and the
training seeds to repeat it with (the way Snakemake workflows keep a sample sheet, validated
against the schema). Its results live under ``results/<system>/<run>/seed<k>/`` (one folder per
replicate, the chain of a single run), beside ``results/<system>/<run>/aggregate.json`` and
``run_report.md`` (the seeds pooled: :mod:`neurotrain.reports.aggregate`).

Config ``runs`` lists them; a system in ``systems`` without a run of its own gets one run named
``default`` with its block's ``training.seed`` as the only seed, so ``make run`` builds
``results/<system>/default/seed<training.seed>/``. A run shares its system's dataset: its overrides
may not touch the ``data`` block (one processed file per system), nor ``training.seed`` (the
seeds list sets it). No torch/jax imports: the Snakefile reads this on every job.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from neurotrain.errors import NeurotrainError

DEFAULT_RUN = "default"


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, recursively (a mapping merges key by key; any
    other value replaces), as Snakemake merges ``--configfile`` files. Neither input changes."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Run:
    """One named run: ``system``, ``name``, its ``seeds`` (training seeds, one replicate each)
    and ``block``, the system's validated config block with the run's overrides (defaults filled;
    ``training.seed`` is set per replicate by :meth:`config`)."""

    system: str
    name: str
    seeds: tuple[int, ...]
    block: dict = field(repr=False, compare=False)
    overrides: dict = field(default_factory=dict, repr=False, compare=False)
    own_preprocessing: bool = False

    def config(self, seed: int) -> dict:
        """The system block of replicate ``seed`` (``training.seed`` = ``seed``). Raises
        NeurotrainError when ``seed`` is not one of the run's seeds."""
        if seed not in self.seeds:
            raise NeurotrainError(f"run {self.system}/{self.name}",
                                  f"has no seed {seed} (its seeds: {', '.join(map(str, self.seeds))})")
        block = copy.deepcopy(self.block)
        block["training"]["seed"] = int(seed)
        return block

    @property
    def folder(self) -> str:
        """``results/<system>/<run>``: the run's folder, relative to the workflow's."""
        return f"results/{self.system}/{self.name}"

    def seed_folder(self, seed: int) -> str:
        """``results/<system>/<run>/seed<k>``: one replicate's run folder."""
        return f"{self.folder}/seed{seed}"

    @property
    def processed(self) -> str:
        """The processed dataset the run trains on: the system's ``data/processed/<system>.h5``,
        or ``data/processed/<system>-<run>.h5`` when the run overrides a key preprocessing reads
        (e.g. cpc_snn's ``model.encoder``, LISBET's ``model.window``): the same raw data, cut
        for this run's model."""
        return f"data/processed/{self.system}-{self.name}.h5" if self.own_preprocessing else \
            f"data/processed/{self.system}.h5"


def preprocess_slice(system: str, block: dict) -> dict:
    """The keys of ``block`` that the system's preprocessing reads."""
    from neurotrain import registry
    from neurotrain.config import slice_block

    return slice_block(block, registry.spec(system).stages["preprocess"].reads)


def run_sheet(config: dict) -> list[Run]:
    """Every run of a validated ``config``: the entries of ``runs`` in order, then a ``default``
    run for each system of ``systems`` that has none. Raises NeurotrainError naming the key
    (``runs.<i>.<field>``, ``i`` counted from 0) for a repeated name (also one differing in case
    only: one folder on macOS), the name ``runs.md``, a dotted override key or a value where a
    mapping belongs, overrides of the shared dataset or of ``training.seed``, or overrides the
    system's schema refuses."""
    from neurotrain.config import validate_system

    runs: list[Run] = []
    seen: dict[tuple[str, str], str] = {}
    for i, entry in enumerate(config.get("runs") or []):
        system, name = entry["system"], entry["name"]
        key = f"runs.{i}"  # counted from 0: runs.1 is the second entry
        if (system, name.casefold()) in seen:  # one folder on a case-insensitive file system
            raise NeurotrainError(f"config key {key}.name", f"run {name!r} of {system} is named twice"
                                  + ("" if seen[system, name.casefold()] == name else
                                     f" (as {seen[system, name.casefold()]!r}: names differing in case only "
                                     "share a folder on macOS and Windows)"))
        if name.casefold() == "runs.md":
            raise NeurotrainError(f"config key {key}.name", f"results/{system}/runs.md is the comparison of "
                                                            f"{system}'s runs; choose another name")
        seen[system, name.casefold()] = name
        overrides = entry.get("config") or {}
        for k in overrides:
            if "." in k:
                raise NeurotrainError(f"config key {key}.config.{k}",
                                      f"a dotted key; write it nested, as in the system's block "
                                      f"({k.split('.', 1)[0]}: {{{k.split('.', 1)[1]}: ...}})")
        try:
            block = validate_system(system, merge(config[system], overrides))
        except NeurotrainError as exc:
            raise NeurotrainError(exc.where.replace(f"config key {system}.", f"config key {key}.config.", 1)
                                  .replace(f"config key {system}", f"config key {key}.config", 1), exc.what) from None
        if "data" in overrides:
            raise NeurotrainError(f"config key {key}.config.data",
                                  f"a run shares its system's dataset; set data keys in the {system} block "
                                  "(or in a config file of their own)")
        if "seed" in (overrides.get("training") or {}):
            raise NeurotrainError(f"config key {key}.config.training.seed",
                                  f"a run's seeds are its `seeds` list ({key}.seeds)")
        own = preprocess_slice(system, block) != preprocess_slice(system, config[system])
        runs.append(Run(system, name, tuple(int(s) for s in entry["seeds"]), block, overrides, own))
    named = {r.system for r in runs}
    for system in config["systems"]:
        if system not in named:
            block = config[system]
            runs.append(Run(system, DEFAULT_RUN, (int(block["training"]["seed"]),), copy.deepcopy(block)))
    return runs


def built_runs(sheet: list[Run], systems: list[str]) -> list[Run]:
    """The runs of ``sheet`` (:func:`run_sheet`) that ``rule all`` builds: those of ``systems``,
    in its order."""
    return [r for s in systems for r in sheet if r.system == s]


def find(sheet: list[Run], system: str, name: str) -> Run:
    """The run ``name`` of ``system`` in ``sheet`` (:func:`run_sheet`, built once); NeurotrainError
    listing the system's runs when absent."""
    runs = [r for r in sheet if r.system == system]
    for r in runs:
        if r.name == name:
            return r
    if not runs:
        raise NeurotrainError(f"run {system}/{name}", f"not in the run sheet: {system} has no run (it is not in "
                                                      "`systems`, and no entry of `runs` names it)")
    listed = ", ".join(r.name for r in runs)
    raise NeurotrainError(f"run {system}/{name}", f"not in the run sheet (config runs; {system}'s runs: {listed})")

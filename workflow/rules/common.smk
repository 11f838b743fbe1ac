# Everything the rules need is computed from the registry (src/neurotrain/systems/*/spec.py):
# targets, the config slice each stage reads, the code each stage runs (the import closure of
# its entry module, so a code change reruns exactly the stages that run it; a rule lists the
# code and config of every earlier stage too, so an artifact is never current while anything
# behind it changed), the conda env of its framework, and the real-data sources. This file
# names no system. No torch/jax imports: it is read again by every cluster job.
import json
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SRC = Path(workflow.basedir) / "src"
# this checkout's package, also on cluster nodes and in conda envs
sys.path.insert(0, str(SRC))

from neurotrain import codedeps, registry
from neurotrain.config import read_config_file, slice_block, validate as validate_config
from neurotrain.errors import NeurotrainError
from neurotrain.runs import run_sheet, built_runs, find as find_run
from neurotrain.spec import FRAMEWORKS, lineage
from neurotrain.training.threads import training_threads

# Every config file strictly (UTF-8, no key given twice), then the merged config against the
# schema (every default filled): one line naming the file or key.
try:
    for _configfile in workflow.config_settings.configfiles:
        read_config_file(_configfile)
    validate_config(config)
    RUNS = run_sheet(config)  # the run sheet (neurotrain.runs): named runs x seeds
except NeurotrainError as exc:
    raise WorkflowError(f"config: {exc}") from None
BUILT = built_runs(RUNS, config["systems"])

# Jobs import the package from this checkout (also inside conda envs and on cluster nodes).
# Without conda, `python` in the rules is the interpreter running Snakemake (the project's
# venv), even when Snakemake is started as .venv/bin/snakemake without activating the venv.
_PREFIX = f'export PYTHONPATH="{SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; '
if not any(
    "conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method
):
    _PREFIX += f'export PATH="{Path(sys.executable).parent}:$PATH"; '
shell.prefix(_PREFIX)

SYSTEMS = config["systems"]
# a run of a system that `systems` leaves out is a target, not part of `all`
for _run in RUNS:
    if _run.system not in SYSTEMS:
        logger.warning(
            f"run {_run.system}/{_run.name}: {_run.system} is not in `systems`, so a bare "
            f"`snakemake` does not build it (target: {_run.folder}/run_report.md)"
        )


# One replicate of a run: results/{system}/{run}/seed{seed}/, its logs under results/logs/ and
# benchmarks under results/benchmarks/ in the same layout (neurotrain.runs).


wildcard_constraints:
    system="|".join(registry.names()),
    run=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    seed=r"0|[1-9][0-9]*",
    filename=r"[A-Za-z0-9][A-Za-z0-9._+-]*",
    name=r"[A-Za-z0-9][A-Za-z0-9._+-]*",


def systems_of(framework):
    """Wildcard constraint: the registered systems of one framework."""
    names = [s for s in registry.names() if registry.spec(s).framework == framework]
    return "|".join(names) or "^$"


def the_run(wildcards):
    """The run of the wildcards (system, run); a run not in the sheet is an error listing them."""
    try:
        return find_run(RUNS, wildcards.system, wildcards.run)
    except NeurotrainError as exc:
        raise WorkflowError(f"config: {exc}") from None


def block(wildcards):
    """The config block a job reads: the system's, or for a replicate (wildcards run and seed)
    its run's overrides with training.seed = seed."""
    if "run" not in wildcards.keys():
        return config[wildcards.system]
    if "seed" not in wildcards.keys():  # the run's own preprocessing
        return the_run(wildcards).block
    try:
        return the_run(wildcards).config(int(wildcards.seed))
    except NeurotrainError as exc:
        raise WorkflowError(f"config: {exc}") from None


def processed_data(wildcards):
    """The processed dataset of the wildcards' run (neurotrain.runs.Run.processed)."""
    return the_run(wildcards).processed


def model_file(kind):
    """``model_best``/``model_final`` of the wildcards' replicate, in its framework's format."""

    def path(wildcards):
        ext = FRAMEWORKS[registry.spec(wildcards.system).framework]
        w = wildcards
        return f"results/{w.system}/{w.run}/seed{w.seed}/model/model_{kind}.{ext}"

    return path


def train_threads(wildcards):
    """The training job's CPU threads: the replicate's <system>.training.threads, which the job
    uses whatever Snakemake allots (neurotrain.training.threads)."""
    return training_threads(block(wildcards))


def chain_priority(wildcards):
    """Jobs of the systems with the longest training first (SystemSpec.train_minutes), so the
    longest chain starts at once and the short ones fill the other cores."""
    return registry.spec(wildcards.system).train_minutes


def train_gpus(wildcards):
    """GPUs the training job asks the cluster for (config cluster.train_gpus; 0 = none)."""
    return config["cluster"]["train_gpus"].get(wildcards.system, 0)


def train_gpu_model(wildcards):
    """The GPU model for --gpus=<model>:<n>, only for a job that asks for GPUs."""
    if not train_gpus(wildcards):
        return ""
    return config["cluster"]["gpu_model"] or ""


def all_reports():
    """The run report of every run `rule all` builds (each needs its seeds' reports)."""
    return [f"{r.folder}/run_report.md" for r in BUILT]


def seed_files(name):
    """``name`` (e.g. metrics.json) in every replicate folder of the wildcards' run."""

    def files(wildcards):
        run = the_run(wildcards)
        return [f"{run.seed_folder(k)}/{name}" for k in run.seeds]

    return files


def aggregate_code(wildcards):
    """Source files behind the run's pooled report (neurotrain.registry.aggregate_code)."""
    return [str(f) for f in registry.aggregate_code(wildcards.system)]


def run_overrides(wildcards):
    """The run's overrides of its system's block, as JSON (shown in its pooled report)."""
    return json.dumps(the_run(wildcards).overrides, sort_keys=True)


def stage_params(stage):
    """The keys of the system's config block that ``stage`` declares it reads, as JSON."""

    def params(wildcards):
        reads = registry.spec(wildcards.system).stages[stage].reads
        return json.dumps(slice_block(block(wildcards), reads), sort_keys=True)

    return params


def upstream_params(stage):
    """The config slices of every stage the artifacts of ``stage`` derive from, as JSON: a
    params trigger of their own, so an artifact is out of date as soon as any config behind it
    changes, even when an intermediate artifact went missing in between (see
    neurotrain.registry.provenance_code)."""

    def params(wildcards):
        stages = registry.spec(wildcards.system).stages
        b = block(wildcards)
        return json.dumps(
            {up: slice_block(b, stages[up].reads) for up in lineage(stage)},
            sort_keys=True,
        )

    return params


def stage_spec(stage):
    """What the stage takes from the system's spec (entry, declared keys, files), as JSON: the
    runner gets it from the rule and never imports the spec, so editing a caption in spec.py
    reruns only what uses it."""

    def spec(wildcards):
        return json.dumps(registry.stage_spec(wildcards.system, stage), sort_keys=True)

    return spec


def stage_code(stage):
    """Source files behind ``stage``'s artifacts for the wildcard's system: the import closure
    (and templates) of the stage and of every stage its artifacts derive from."""

    def code(wildcards):
        return [str(f) for f in registry.provenance_code(wildcards.system, stage)]

    return code


def stage_env(stage):
    """Conda environment file of ``stage`` for the wildcard's system."""

    def env(wildcards):
        name = registry.stage_env(wildcards.system, stage)
        return str(Path(workflow.basedir) / "envs" / f"{name}.yaml")

    return env


def figure_captions(wildcards):
    """Captions of the system's figures for `snakemake --report` (workflow/report/figure.rst)."""
    return registry.spec(wildcards.system).captions


# The package's import lists, parsed once and kept in .snakemake/ (neurotrain.codedeps); the
# project report's code below is the closure of every stage of every listed system.
codedeps.use_cache(Path(".snakemake") / "neurotrain" / "imports.json")
FETCH_CODE = [str(f) for f in registry.shared_code("neurotrain.fetch")]
INDEX_CODE = [str(f) for f in registry.index_code(SYSTEMS)]
codedeps.save_cache()
ANALYSIS_ENV = str(Path(workflow.basedir) / "envs" / "analysis.yaml")


# Real-data sources: files downloaded by fetch_dataset (address and checksum from the config), or
# the user's own files (config keys holding a path or a list of paths).
def _source(system):
    data = config[system]["data"]
    return data, registry.spec(system).sources.get(data["source"])


def _downloads(system):
    data, source = _source(system)
    if source is None or source.downloads is None:
        return {}
    try:  # file names come from the config: plain names only (neurotrain.names)
        return source.downloads(data)
    except NeurotrainError as exc:
        raise WorkflowError(f"config: {exc}") from None


def download_spec(wildcards):
    """Address, checksum and retries of one download, for the fetch rule's params (``hash``:
    md5:<hex>, sha256:<hex> or a plain md5, from the source's ``hash`` or ``md5``)."""
    files = _downloads(wildcards.system)
    if wildcards.filename not in files:
        raise WorkflowError(
            f"config key {wildcards.system}.data: no download named {wildcards.filename}"
        )
    entry = files[wildcards.filename]
    checksum = entry.get("hash") or entry.get("md5")
    if not checksum:
        raise WorkflowError(
            f"config key {wildcards.system}.data: no md5 for {wildcards.filename}"
        )
    return {"url": entry["url"], "hash": checksum, "retries": entry["retries"]}


def download_cache(wildcards):
    """The download cache folder (config downloads.cache; '' = none)."""
    return config["downloads"]["cache"] or ""


def raw_dataset(wildcards):
    """The raw input(s) of preprocess: the generated folder, downloads, or the user's files."""
    system = wildcards.system
    data, source = _source(system)
    if data["source"] == "embedded":
        return [f"data/raw/{system}/embedded"]
    downloads = _downloads(system)
    if downloads:
        return [f"data/raw/{system}/download/{name}" for name in downloads]
    keys = source.user_files if source is not None else ()
    value = data
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    paths = [value] if isinstance(value, str) else list(value or [])
    if not paths:
        key = ".".join((system, "data") + tuple(keys))
        raise WorkflowError(
            f"config key {key}: required when source is {data['source']!r}"
        )
    return paths


def ground_truth(wildcards):
    """Ground truth of the embedded dataset (none for real data)."""
    if config[wildcards.system]["data"]["source"] == "embedded":
        return [f"data/raw/{wildcards.system}/embedded"]
    return []


def truth_arg(wildcards):
    truth = ground_truth(wildcards)
    return f"--truth {shlex.quote(str(Path(truth[0], 'truth.npz')))}" if truth else ""


# The apply targets (workflow/rules/apply.smk).
def apply_files(wildcards):
    """The file(s) of config key <system>.apply.inputs.<name>."""
    inputs = block(wildcards).get("apply", {}).get("inputs", {})
    if wildcards.name not in inputs:
        named = ", ".join(sorted(inputs)) or "none"
        raise WorkflowError(
            f"config key {wildcards.system}.apply.inputs: no input named {wildcards.name} (named: {named})"
        )
    value = inputs[wildcards.name]
    return [value] if isinstance(value, str) else list(value)


def all_applies():
    """Every configured apply target of the built runs (each seed) that have an apply stage."""
    return [
        f"{r.seed_folder(k)}/apply/{name}"
        for r in BUILT
        if "apply" in registry.spec(r.system).stages
        for k in r.seeds
        for name in r.block.get("apply", {}).get("inputs", {})
    ]

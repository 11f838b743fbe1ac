# Helpers shared by the rules: targets, the config slice each stage receives, the code each
# stage runs (listed as inputs so a code change reruns that stage) and its conda env.
# No torch/jax imports here: this file is read again by every cluster job.
import json
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

SRC = Path(workflow.basedir) / "src"
PKG = SRC / "neurotrain"
# Jobs import the package from this checkout (also inside conda envs and on cluster nodes).
# Without conda, `python` in the rules is the interpreter running Snakemake (the project's
# venv), even when Snakemake is started as .venv/bin/snakemake without activating the venv.
_PREFIX = f'export PYTHONPATH="{SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; '
if not any(
    "conda" in str(m).lower() for m in workflow.deployment_settings.deployment_method
):
    _PREFIX += f'export PATH="{Path(sys.executable).parent}:$PATH"; '
shell.prefix(_PREFIX)

# Config sections each stage reads ("section" or "section.key"); a change elsewhere in the
# system's block does not rerun the stage.
STAGE_CONFIG = {
    "ei_rnn": {
        "generate": ["data"],
        "preprocess": ["data"],
        "train": ["data", "model", "loss", "training"],
        "extract": [],
        "analyze": ["analysis", "training.seed"],
        "figures": [],
        "report": [],
    },
    "cebra": {
        "generate": ["data.embedded"],
        "preprocess": [
            "data.source",
            "data.test_fraction",
            "data.min_session_bins",
            "data.rat.names",
            "data.rat.md5",
            "data.nwb",
        ],
        "train": ["model", "training"],
        "extract": [],
        "analyze": ["analysis"],
        "figures": [],
        "report": [],
    },
    "lisbet": {
        "generate": ["data.embedded"],
        "preprocess": ["data", "model.window"],
        "train": ["model", "training"],
        "extract": ["training.embed_batch"],
        "analyze": ["analysis"],
        "figures": [],
        "report": [],
    },
    "ring_attractor": {
        "generate": ["data.embedded"],
        "preprocess": [
            "data.source",
            "data.val_fraction",
            "data.test_fraction",
            "data.split_seed",
            "data.embedded",
            "data.nwb",
        ],
        "train": ["model", "loss", "training"],
        "extract": ["analysis.drift_trials", "analysis.drift_duration"],
        "analyze": ["analysis"],
        "figures": [],
        "report": [],
    },
    "cpc_snn": {
        "generate": ["data"],
        "preprocess": ["data", "model.encoder", "model.cpc.prediction_steps"],
        "train": ["data.injection", "model", "training"],
        "extract": ["model", "analysis.spike_examples"],
        "analyze": ["analysis", "data.injection"],
        "figures": [],
        "report": [],
    },
}

# Package modules each stage runs, per system ("{system}" is filled in).
STAGE_CODE = {
    "generate": ["stages/generate.py", "data/{system}.py"],
    "fetch": ["stages/fetch.py", "data/fetch.py"],
    "preprocess": ["stages/preprocess.py", "data/{system}.py"],
    "train": [
        "stages/train.py",
        "systems/{system}.py",
        "training/torch_loop.py",
        "training/checkpoint.py",
        "data/{system}.py",
        "analysis/stats.py",
    ],
    "extract": ["stages/extract.py", "extraction/{system}.py", "analysis/stats.py"],
    "analyze": ["stages/analyze.py", "analysis/{system}.py", "analysis/stats.py"],
    "figures": ["stages/figures.py", "figures/{system}.py", "figures/common.py"],
    "report": [
        "stages/report.py",
        "reports/render.py",
        "reports/templates/{system}.md.j2",
    ],
}
EXTRA_CODE = {
    "ei_rnn": {"preprocess": ["data/matlab.py"]},
    "cebra": {"preprocess": ["data/fetch.py"]},
    "lisbet": {
        "preprocess": ["data/fetch.py"],
        "train": ["models/lisbet.py"],
        "extract": ["models/lisbet.py", "systems/lisbet.py"],
    },
    "cpc_snn": {
        "generate": ["data/splits.py"],
        "preprocess": ["data/splits.py"],
        "train": ["models/cpc_snn.py", "training/jax_loop.py", "training/runstate.py"],
        "extract": ["models/cpc_snn.py", "systems/cpc_snn.py", "training/jax_loop.py"],
    },
    "ring_attractor": {
        "preprocess": ["data/fetch.py", "data/splits.py"],
        "train": [
            "models/ring_attractor.py",
            "analysis/ring_attractor.py",
            "data/splits.py",
        ],
        "extract": ["models/ring_attractor.py", "systems/ring_attractor.py"],
    },
}

# Conda environment of each stage, per framework of the system's model.
FRAMEWORK = {
    "ei_rnn": "torch",
    "cebra": "torch",
    "ring_attractor": "torch",
    "lisbet": "torch",
    "cpc_snn": "jax",
}
CHECKPOINT_EXT = {"torch": "pt", "jax": "npz"}
STAGE_ENV = {
    "generate": "analysis",
    "fetch": "analysis",
    "preprocess": "analysis",
    "train": "{framework}",
    "extract": "{framework}",
    "analyze": "analysis",
    "figures": "analysis",
    "report": "analysis",
}


def model_file(kind):
    """``model_best``/``model_final`` of the wildcard's system, in its framework's format."""

    def path(wildcards):
        ext = CHECKPOINT_EXT[FRAMEWORK[wildcards.system]]
        return f"results/{wildcards.system}/model/model_{kind}.{ext}"

    return path


def train_gpus(wildcards):
    """GPUs the training job asks the cluster for (config cluster.train_gpus; 0 = none)."""
    return config["cluster"]["train_gpus"].get(wildcards.system, 0)


def train_gpu_model(wildcards):
    return config["cluster"]["gpu_model"] or ""


# The project report's code (rule index_report, one job over all systems).
INDEX_CODE = [
    str(PKG / f)
    for f in (
        "stages/index.py",
        "stages/_common.py",
        "reports/index.py",
        "reports/render.py",
        "reports/templates/index.md.j2",
    )
]


def all_reports():
    return expand("results/{system}/training_report.md", system=config["systems"])


def _pick(block, dotted):
    keys = dotted.split(".")
    value = block
    for k in keys:
        value = value[k]
    out = current = {}
    for k in keys[:-1]:
        current = current.setdefault(k, {})
    current[keys[-1]] = value
    return out


def _merge(a, b):
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
    return a


def stage_params(stage):
    """The part of the system's config block that ``stage`` reads, as JSON."""

    def params(wildcards):
        block = config[wildcards.system]
        sliced = {}
        for dotted in STAGE_CONFIG[wildcards.system][stage]:
            _merge(sliced, _pick(block, dotted))
        return json.dumps(sliced, sort_keys=True)

    return params


def stage_code(stage):
    """Source files of the modules ``stage`` runs for the wildcard's system."""

    def code(wildcards):
        files = STAGE_CODE[stage] + EXTRA_CODE.get(wildcards.system, {}).get(stage, [])
        return [str(PKG / f.format(system=wildcards.system)) for f in files]

    return code


def stage_env(stage):
    """Conda environment file of ``stage`` for the wildcard's system."""

    def env(wildcards):
        name = STAGE_ENV[stage].format(framework=FRAMEWORK[wildcards.system])
        return str(Path(workflow.basedir) / "envs" / f"{name}.yaml")

    return env


# Real-data sources: files downloaded by fetch_dataset, each with its address and md5 from
# the config; or the user's own files (config keys holding a path or a list of paths).
def _rat_files(data):
    rat = data["rat"]
    return {
        f"{name}.jl.gz": {
            "url": rat["url"].format(name=name),
            "md5": rat["md5"].get(name, ""),
            "retries": rat["retries"],
        }
        for name in rat["names"]
    }


def _nwb_url_file(data):
    """The ring attractor's NWB download, when ``data.nwb.url`` is set."""
    nwb = data["nwb"]
    if not nwb["url"]:
        return {}
    name = PurePosixPath(urlparse(nwb["url"]).path).name or "recording.nwb"
    return {
        name: {"url": nwb["url"], "md5": nwb["md5"] or "", "retries": nwb["retries"]}
    }


def _calms21_files(data):
    c = data["calms21"]
    names = {
        "unlabeled": "unlabeled_videos.zip",
        "task1": "task1_classic_classification.zip",
    }
    return {
        names[k]: {
            "url": c["url"].format(file=names[k]),
            "md5": c["md5"][k],
            "retries": c["retries"],
        }
        for k in c["files"]
    }


def _gwosc_files(data):
    g = data["gwosc"]
    return {
        name: {"url": g["url"].format(name=name), "md5": md5, "retries": g["retries"]}
        for name, md5 in g["files"].items()
    }


DOWNLOADS = {
    ("cebra", "rat"): _rat_files,
    ("ring_attractor", "nwb"): _nwb_url_file,
    ("lisbet", "calms21"): _calms21_files,
    ("cpc_snn", "gwosc"): _gwosc_files,
}
USER_FILES = {
    ("ei_rnn", "mat"): ("path",),
    ("cebra", "nwb"): ("nwb", "paths"),
    ("ring_attractor", "nwb"): ("nwb", "path"),
    ("lisbet", "movement"): ("movement", "paths"),
}


def download_spec(wildcards):
    """Address, md5 and retries of one download, as a dict for the fetch rule's params."""
    data = config[wildcards.system]["data"]
    files = DOWNLOADS[(wildcards.system, data["source"])](data)
    if not files[wildcards.filename]["md5"]:
        raise ValueError(
            f"config key {wildcards.system}.data: no md5 for {wildcards.filename}"
        )
    return files[wildcards.filename]


def raw_dataset(wildcards):
    """The raw input(s) of preprocess: the generated folder, downloads, or the user's files."""
    system = wildcards.system
    data = config[system]["data"]
    source = data["source"]
    if source == "embedded":
        return [f"data/raw/{system}/embedded"]
    downloads = (
        DOWNLOADS[(system, source)](data) if (system, source) in DOWNLOADS else {}
    )
    if downloads:
        return [f"data/raw/{system}/download/{name}" for name in downloads]
    keys = USER_FILES[(system, source)]
    value = data
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    paths = [value] if isinstance(value, str) else list(value or [])
    if not paths:
        key = ".".join((system, "data") + keys)
        raise ValueError(f"config key {key}: required when source is {source!r}")
    return paths


def ground_truth(wildcards):
    """Ground truth of the embedded dataset (none for real data)."""
    if config[wildcards.system]["data"]["source"] == "embedded":
        return [f"data/raw/{wildcards.system}/embedded"]
    return []


def truth_arg(wildcards):
    truth = ground_truth(wildcards)
    return f"--truth {truth[0]}/truth.npz" if truth else ""

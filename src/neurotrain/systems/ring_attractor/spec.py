"""Ring attractor: what the workflow needs to know about this system (torch-free)."""

from pathlib import PurePosixPath
from urllib.parse import urlparse

from neurotrain.names import plain_name
from neurotrain.spec import Source, SystemSpec, conventional_stages


def nwb_download(data: dict) -> dict[str, dict]:
    """The NWB recording at ``data.nwb.url``, when one is set (else the user's ``data.nwb.path``)."""
    nwb = data["nwb"]
    if not nwb["url"]:
        return {}
    name = plain_name(PurePosixPath(urlparse(nwb["url"]).path).name or "recording.nwb",
                      "config key ring_attractor.data.nwb.url (its file name)")
    return {name: {"url": nwb["url"], "md5": nwb["md5"] or "", "retries": nwb["retries"]}}


SPEC = SystemSpec(
    name="ring_attractor",
    title="Ring-attractor head-direction network",
    seed="ring-attractor-enhanced-training.md",
    framework="torch",
    train_minutes=10,
    stages=conventional_stages(
        generate=("data.embedded",),
        preprocess=("data.source", "data.val_fraction", "data.test_fraction",
                    "data.split_seed", "data.embedded", "data.nwb"),
        train=("model", "loss", "training"),
        extract=("analysis.drift_trials", "analysis.drift_duration"),
        analyze=("analysis",),
        apply=("apply", "data.nwb"),
    ),
    sources={"nwb": Source(downloads=nwb_download, user_files=("nwb", "path"))},
    captions={
        "training_curves": "Ring attractor: loss and heading tracking error per epoch.",
        "learning_rate": "Ring attractor: learning-rate schedule.",
        "gradient_norms": "Ring attractor: gradient norms per parameter group.",
        "parameter_evolution": "Ring attractor: evolution of the ring's scalar parameters (gains, noise rates) "
        "within their biological ranges.",
        "connectivity": "Ring attractor: excitatory-inhibitory connectivity profiles around the ring.",
        "bump_over_time": "Ring attractor: activity bump over time beside the true heading.",
        "decoded_vs_true": "Ring attractor: population-vector decoded heading against the true heading.",
        "pca_ring": "Ring attractor: population activity on its first two principal components (a ring).",
        "drift": "Ring attractor: drift of the bump in darkness (no input), per trial.",
        "fano_factors": "Ring attractor: Fano factors of excitatory and inhibitory spike counts.",
    },
)

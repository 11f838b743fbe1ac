"""CEBRA: what the workflow needs to know about this system (torch-free)."""

from neurotrain.names import plain_name
from neurotrain.spec import Source, SystemSpec, conventional_stages


def rat_files(data: dict) -> dict[str, dict]:
    """The CEBRA rat hippocampus files (one ``<rat>.jl.gz`` per name in ``data.rat.names``)."""
    rat = data["rat"]
    for i, name in enumerate(rat["names"]):
        plain_name(name, f"config key cebra.data.rat.names.{i}")
    return {f"{name}.jl.gz": {"url": rat["url"].format(name=name), "md5": rat["md5"].get(name, ""),
                              "retries": rat["retries"]}
            for name in rat["names"]}


SPEC = SystemSpec(
    name="cebra",
    title="CEBRA multi-session embedding",
    seed="cebra-multisession-training.md",
    framework="torch",
    train_minutes=12,
    stages=conventional_stages(
        generate=("data.embedded",),
        preprocess=("data.source", "data.test_fraction", "data.split_gap", "data.behavior_columns",
                    "data.discrete_columns", "data.min_session_bins",
                    "data.rat.names", "data.rat.md5", "data.nwb"),
        train=("model", "training"),
        analyze=("analysis",),
        apply=("apply", "data.nwb", "analysis.knn_neighbors"),
    ),
    sources={"rat": Source(downloads=rat_files), "nwb": Source(user_files=("nwb", "paths"))},
    # the analysis scores consistency with cebra's own consistency_score
    framework_stages=("train", "extract", "apply", "analyze"),
    captions={
        "embeddings": "CEBRA: per-session embeddings coloured by the behaviour variable (shared latent across sessions).",
        "loss": "CEBRA: InfoNCE loss per step and the goodness of fit in bits (log of the batch size minus the loss).",
        "consistency": "CEBRA: cross-session consistency, R^2 of the linear alignment of every ordered pair of sessions.",
        "decoding": "CEBRA: kNN-decoded against true behaviour on held-out bins, per session.",
        "fano_factors": "CEBRA: Fano factors of the input spike counts per session.",
    },
)

"""CEBRA: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import Source, Stage, SystemSpec


def rat_files(data: dict) -> dict[str, dict]:
    """The CEBRA rat hippocampus files (one ``<rat>.jl.gz`` per name in ``data.rat.names``)."""
    rat = data["rat"]
    return {f"{name}.jl.gz": {"url": rat["url"].format(name=name), "md5": rat["md5"].get(name, ""),
                              "retries": rat["retries"]}
            for name in rat["names"]}


SPEC = SystemSpec(
    name="cebra",
    title="CEBRA multi-session embedding",
    seed="cebra-multisession-training.md",
    framework="torch",
    stages={
        "generate": Stage(".data:generate_embedded", reads=("data.embedded",)),
        "preprocess": Stage(".data:preprocess_raw", reads=("data.source", "data.test_fraction", "data.min_session_bins",
                                                           "data.rat.names", "data.rat.md5", "data.nwb")),
        "train": Stage(".train:run_training", reads=("model", "training")),
        "extract": Stage(".extract:extract"),
        "analyze": Stage(".analyze:analyze", reads=("analysis",)),
        "figures": Stage(".figures:render"),
        "report": Stage("neurotrain.reports.render:render_report", files=("report.md.j2",)),
    },
    sources={"rat": Source(downloads=rat_files), "nwb": Source(user_files=("nwb", "paths"))},
    captions={
        "embeddings": "CEBRA: per-session embeddings coloured by the behaviour variable (shared latent across sessions).",
        "loss": "CEBRA: InfoNCE loss per step and the goodness of fit in bits (log of the batch size minus the loss).",
        "consistency": "CEBRA: cross-session consistency, R^2 of the linear alignment of every ordered pair of sessions.",
        "decoding": "CEBRA: kNN-decoded against true behaviour on held-out bins, per session.",
        "fano_factors": "CEBRA: Fano factors of the input spike counts per session.",
    },
)

"""CPC + SNN: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import Source, Stage, SystemSpec


def gwosc_files(data: dict) -> dict[str, dict]:
    """The GWOSC strain files named in ``data.gwosc.files`` (name -> md5)."""
    g = data["gwosc"]
    return {name: {"url": g["url"].format(name=name), "md5": md5, "retries": g["retries"]}
            for name, md5 in g["files"].items()}


SPEC = SystemSpec(
    name="cpc_snn",
    title="CPC + spiking gravitational-wave detector",
    seed="cpc-snn-unified-trainer.md",
    framework="jax",
    stages={
        "generate": Stage(".data:generate_embedded", reads=("data",)),
        "preprocess": Stage(".data:preprocess_raw", reads=("data", "model.encoder", "model.cpc.prediction_steps")),
        "train": Stage(".train:run_training", reads=("data.injection", "model", "training")),
        "extract": Stage(".extract:extract", reads=("model", "analysis.spike_examples")),
        "analyze": Stage(".analyze:analyze", reads=("analysis", "data.injection")),
        "figures": Stage(".figures:render"),
        "report": Stage("neurotrain.reports.render:render_report", files=("report.md.j2",)),
    },
    sources={"gwosc": Source(downloads=gwosc_files)},
    captions={
        "loss_per_phase": "CPC + SNN: losses per training phase (CPC pre-training, SNN with the encoder frozen, joint "
        "fine-tuning).",
        "roc": "CPC + SNN: ROC of the spiking detector beside the matched filter (the optimal detector in Gaussian "
        "noise) on the same test segments.",
        "efficiency_vs_snr": "CPC + SNN: detection efficiency against injected optimal SNR at the quality bar's "
        "false-alarm probability, SNN and matched filter.",
        "spike_raster": "CPC + SNN: spike rasters of the bridge and every LIF layer for loud chirps and noise segments.",
        "latent_pca": "CPC + SNN: CPC latent frames on their principal components.",
    },
)

"""CPC + SNN: what the workflow needs to know about this system (torch-free)."""

from neurotrain.names import plain_name
from neurotrain.spec import Source, SystemSpec, conventional_stages


def gwosc_files(data: dict) -> dict[str, dict]:
    """The GWOSC strain files named in ``data.gwosc.files`` (name -> md5)."""
    g = data["gwosc"]
    for name in g["files"]:
        plain_name(name, "config key cpc_snn.data.gwosc.files")
    return {name: {"url": g["url"].format(name=name), "md5": md5, "retries": g["retries"]}
            for name, md5 in g["files"].items()}


SPEC = SystemSpec(
    name="cpc_snn",
    title="CPC + spiking gravitational-wave detector",
    seed="cpc-snn-unified-trainer.md",
    framework="jax",
    train_minutes=17,
    stages=conventional_stages(
        generate=("data",),
        preprocess=("data", "model.encoder", "model.cpc.prediction_steps", "analysis.bar_fap"),
        train=("data.injection", "model", "training", "analysis.bar_fap"),
        extract=("model", "analysis.spike_examples"),
        analyze=("analysis", "data.injection"),
        apply=("apply", "data", "analysis.bar_fap", "analysis.n_templates"),
    ),
    sources={"gwosc": Source(downloads=gwosc_files, user_files=("gwosc", "paths"))},
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

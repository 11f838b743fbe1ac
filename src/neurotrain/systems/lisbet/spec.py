"""LISBET: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import Source, SystemSpec, conventional_stages

# Every training key but embed_batch (the inference batch of extraction, which must not retrain).
TRAINING_KEYS = ("task_ids", "run_id", "seed", "epochs", "train_sample", "batch_size", "learning_rate", "gradient_clip",
                 "val_examples", "delay_min", "delay_max", "speed_fast", "speed_slow", "device", "threads",
                 "checkpoint_every")
CALMS21_ARCHIVES = {"unlabeled": "unlabeled_videos.zip", "task1": "task1_classic_classification.zip"}


def calms21_files(data: dict) -> dict[str, dict]:
    """The CalMS21 archives named in ``data.calms21.files``."""
    c = data["calms21"]
    return {CALMS21_ARCHIVES[k]: {"url": c["url"].format(file=CALMS21_ARCHIVES[k]), "md5": c["md5"][k],
                                  "retries": c["retries"]}
            for k in c["files"]}


SPEC = SystemSpec(
    name="lisbet",
    title="LISBET social-behaviour transformer",
    seed="lisbet-self-supervised-training.rst",
    framework="torch",
    train_minutes=2,
    stages=conventional_stages(
        generate=("data.embedded",),
        preprocess=("data", "model.window"),
        train=("model", *(f"training.{k}" for k in TRAINING_KEYS)),
        extract=("training.embed_batch",),
        analyze=("analysis",),
        apply=("apply", "data", "analysis.classifier_C", "training.embed_batch"),
    ),
    sources={"calms21": Source(downloads=calms21_files), "movement": Source(user_files=("movement", "paths"))},
    captions={
        "history": "LISBET: training and validation accuracy per self-supervised task per epoch.",
        "embedding_pca": "LISBET: per-frame embeddings on their first principal components, coloured by the true "
        "behaviour.",
        "confusion": "LISBET: confusion matrix of the linear behaviour classifier on embeddings (held-out sequences).",
        "ethogram": "LISBET: true and predicted behaviour over time for held-out sequences.",
    },
)

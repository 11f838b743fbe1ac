"""Toy: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import Stage, SystemSpec

SPEC = SystemSpec(
    name="toy",
    title="Toy linear regression",
    seed="(none: the test of adding a system)",
    framework="torch",
    stages={
        "generate": Stage(".data:generate_embedded", reads=("data",)),
        "preprocess": Stage(".data:preprocess_raw", reads=("data.val_fraction",)),
        "train": Stage(".train:run_training", reads=("training",)),
        "extract": Stage(".extract:extract"),
        "analyze": Stage(".analyze:analyze", reads=("analysis",)),
        "figures": Stage(".figures:render"),
        "report": Stage("neurotrain.reports.render:render_report", files=("report.md.j2",)),
    },
    captions={"fit": "Toy: predicted against true targets on the validation samples."},
)

"""Toy: what the workflow needs to know about this system (torch-free)."""

from neurotrain.spec import SystemSpec, conventional_stages

SPEC = SystemSpec(
    name="toy",
    title="Toy linear regression",
    seed="(none: the test of adding a system)",
    framework="torch",
    stages=conventional_stages(generate=("data",), preprocess=("data.val_fraction",), train=("training",),
                               analyze=("analysis",)),
    captions={"fit": "Toy: predicted against true targets on the validation samples."},
)

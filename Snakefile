# neurotrain: train neuroscience models and turn what they learned into evidence.
# Stages per system: generate/fetch -> preprocess -> train -> extract -> analyze -> figures -> report.
# The systems, their stages and config slices come from src/neurotrain/systems/*/spec.py
# (workflow/rules/common.smk validates the config against the schema assembled from them).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/apply.smk"


rule all:
    default_target: True
    input:
        all_reports(),
        "results/report.md",
        all_applies(),

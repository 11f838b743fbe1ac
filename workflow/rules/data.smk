# Datasets: the embedded default is generated (with its ground truth); real data is the
# user's file. Preprocess writes the system's standard HDF5 layout.


localrules:
    generate_dataset,
    fetch_dataset,


rule generate_dataset:
    input:
        code=stage_code("generate"),
    output:
        directory("data/raw/{system}/embedded"),
    log:
        "results/logs/{system}/generate_dataset.log",
    benchmark:
        "results/benchmarks/{system}/generate_dataset.tsv"
    priority: chain_priority
    conda:
        stage_env("generate")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=stage_params("generate"),
        stage=stage_spec("generate"),
    shell:
        "python -m neurotrain.runner generate --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        " --out-dir {output:q} > {log:q} 2>&1"


rule preprocess_dataset:
    input:
        raw=raw_dataset,
        code=stage_code("preprocess"),
    output:
        "data/processed/{system}.h5",
    log:
        "results/logs/{system}/preprocess_dataset.log",
    benchmark:
        "results/benchmarks/{system}/preprocess_dataset.tsv"
    priority: chain_priority
    conda:
        stage_env("preprocess")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cfg=stage_params("preprocess"),
        stage=stage_spec("preprocess"),
        upstream=upstream_params("preprocess"),
    shell:
        "python -m neurotrain.runner preprocess --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        " --raw {input.raw:q} --out {output:q} > {log:q} 2>&1"


rule fetch_dataset:
    input:
        code=FETCH_CODE,
    output:
        "data/raw/{system}/download/{filename}",
    log:
        "results/logs/{system}/fetch_dataset_{filename}.log",
    benchmark:
        "results/benchmarks/{system}/fetch_dataset_{filename}.tsv"
    conda:
        ANALYSIS_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        spec=download_spec,
        cache=download_cache,
    shell:
        "python -m neurotrain.runner fetch --url {params.spec[url]:q} --hash {params.spec[hash]:q}"
        " --retries {params.spec[retries]:q} --cache {params.cache:q} --out {output:q} > {log:q} 2>&1"


# A run that overrides a key preprocessing reads (neurotrain.runs.Run.processed) cuts the same
# raw data for its own model: data/processed/<system>-<run>.h5.
use rule preprocess_dataset as preprocess_run_dataset with:
    output:
        "data/processed/{system}-{run}.h5",
    log:
        "results/logs/{system}/{run}/preprocess_dataset.log",
    benchmark:
        "results/benchmarks/{system}/{run}/preprocess_dataset.tsv"

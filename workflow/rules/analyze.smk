# Analysis: per-neuron metrics, PCA, Fano factors, the system's scores.


rule analyze_population:
    input:
        weights="results/{system}/{run}/seed{seed}/weights",
        outputs="results/{system}/{run}/seed{seed}/outputs",
        data=processed_data,
        truth=ground_truth,
        code=stage_code("analyze"),
    output:
        metrics=directory("results/{system}/{run}/seed{seed}/metrics"),
        population=directory("results/{system}/{run}/seed{seed}/population"),
        summary="results/{system}/{run}/seed{seed}/metrics.json",
    log:
        "results/logs/{system}/{run}/seed{seed}/analyze_population.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/analyze_population.tsv"
    conda:
        stage_env("analyze")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cfg=stage_params("analyze"),
        stage=stage_spec("analyze"),
        upstream=upstream_params("analyze"),
        truth=truth_arg,
    shell:
        "python -m neurotrain.runner analyze --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --run-dir "$(dirname {output.summary:q})" --data {input.data:q} {params.truth} > {log:q} 2>&1'

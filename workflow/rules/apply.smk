# The trained model applied to new input files, without retraining:
# results/<system>/apply/<name>/ for each entry <name> of config <system>.apply.inputs.


rule apply_model:
    input:
        best=model_file("best"),
        summary="results/{system}/{run}/seed{seed}/metrics.json",
        data=processed_data,
        files=apply_files,
        code=stage_code("apply"),
    output:
        directory("results/{system}/{run}/seed{seed}/apply/{name}"),
    log:
        "results/logs/{system}/{run}/seed{seed}/apply_{name}.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/apply_{name}.tsv"
    conda:
        stage_env("apply")
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        cfg=stage_params("apply"),
        stage=stage_spec("apply"),
        upstream=upstream_params("apply"),
    shell:
        "python -m neurotrain.runner apply --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --run-dir "$(dirname {input.summary:q})" --data {input.data:q} --inputs {input.files:q}'
        " --out-dir {output:q} > {log:q} 2>&1"

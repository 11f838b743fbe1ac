# Training, one job per replicate. Resume state lives in results/{system}/{run}/seed{seed}/model/checkpoints/ (not a declared
# output, so Snakemake does not delete it): an interrupted job resumes when rerun.


rule train_model:
    input:
        data=processed_data,
        code=stage_code("train"),
    output:
        best="results/{system}/{run}/seed{seed}/model/model_best.pt",
        final="results/{system}/{run}/seed{seed}/model/model_final.pt",
        log="results/{system}/{run}/seed{seed}/model/training_log.json",
        config="results/{system}/{run}/seed{seed}/model/config.json",
    log:
        "results/logs/{system}/{run}/seed{seed}/train_model.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/train_model.tsv"
    wildcard_constraints:
        system=systems_of("torch"),
    priority: chain_priority
    conda:
        stage_env("train")
    threads: train_threads
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=train_gpus,
        gpu_model=train_gpu_model,
    params:
        cfg=stage_params("train"),
        stage=stage_spec("train"),
        upstream=upstream_params("train"),
    shell:
        "python -m neurotrain.runner train --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --data {input.data:q} --out-dir "$(dirname {output.best:q})" > {log:q} 2>&1'


# JAX systems: the same job; parameters are saved as .npz (arrays + JSON metadata, no pickle).
use rule train_model as train_model_jax with:
    output:
        best="results/{system}/{run}/seed{seed}/model/model_best.npz",
        final="results/{system}/{run}/seed{seed}/model/model_final.npz",
        log="results/{system}/{run}/seed{seed}/model/training_log.json",
        config="results/{system}/{run}/seed{seed}/model/config.json",
    wildcard_constraints:
        system=systems_of("jax"),


rule extract_model:
    input:
        best=model_file("best"),
        data=processed_data,
        code=stage_code("extract"),
    output:
        weights=directory("results/{system}/{run}/seed{seed}/weights"),
        outputs=directory("results/{system}/{run}/seed{seed}/outputs"),
        export=directory("results/{system}/{run}/seed{seed}/export"),
    log:
        "results/logs/{system}/{run}/seed{seed}/extract_model.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/extract_model.tsv"
    conda:
        stage_env("extract")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        cfg=stage_params("extract"),
        stage=stage_spec("extract"),
        upstream=upstream_params("extract"),
    shell:
        "python -m neurotrain.runner extract --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --model-dir "$(dirname {input.best:q})" --data {input.data:q} --out-dir "$(dirname {output.weights:q})" > {log:q} 2>&1'

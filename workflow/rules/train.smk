# Training, one job per replicate. Resume state lives in results/{system}/{run}/seed{seed}/model/checkpoints/ (not a declared
# output, so Snakemake does not delete it): an interrupted job resumes when rerun.


rule train_model:
    input:
        data=processed_data,
        code=stage_code("train"),
    output:
        best=RUN_DIR + "/model/model_best.pt",
        final=RUN_DIR + "/model/model_final.pt",
        log=RUN_DIR + "/model/training_log.json",
        config=RUN_DIR + "/model/config.json",
    log:
        RUN_LOG + "/train_model.log",
    benchmark:
        RUN_BENCH + "/train_model.tsv"
    wildcard_constraints:
        system=systems_of("torch"),
    conda:
        stage_env("train")
    threads: 2
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
        ' --data {input.data:q} --out-dir "$(dirname {output.best:q})" --threads {threads:q} > {log:q} 2>&1'


# JAX systems: the same job; parameters are saved as .npz (arrays + JSON metadata, no pickle).
use rule train_model as train_model_jax with:
    output:
        best=RUN_DIR + "/model/model_best.npz",
        final=RUN_DIR + "/model/model_final.npz",
        log=RUN_DIR + "/model/training_log.json",
        config=RUN_DIR + "/model/config.json",
    wildcard_constraints:
        system=systems_of("jax"),


rule extract_model:
    input:
        best=model_file("best"),
        data=processed_data,
        code=stage_code("extract"),
    output:
        weights=directory(RUN_DIR + "/weights"),
        outputs=directory(RUN_DIR + "/outputs"),
        export=directory(RUN_DIR + "/export"),
    log:
        RUN_LOG + "/extract_model.log",
    benchmark:
        RUN_BENCH + "/extract_model.tsv"
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

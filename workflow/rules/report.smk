# Figures and the Jinja markdown report (cheap: run on the submitting host).


localrules:
    render_figures,
    render_report,
    index_report,


rule render_figures:
    input:
        summary="results/{system}/metrics.json",
        training_log="results/{system}/model/training_log.json",
        run_config="results/{system}/model/config.json",
        weights="results/{system}/weights",
        outputs="results/{system}/outputs",
        population="results/{system}/population",
        code=stage_code("figures"),
    output:
        report(
            directory("results/{system}/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="{system}",
        ),
    log:
        "results/logs/{system}/render_figures.log",
    benchmark:
        "results/benchmarks/{system}/render_figures.tsv"
    conda:
        stage_env("figures")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=stage_params("figures"),
        stage=stage_spec("figures"),
        upstream=upstream_params("figures"),
        captions=figure_captions,
    shell:
        "python -m neurotrain.runner figures --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --run-dir "$(dirname {input.summary:q})" > {log:q} 2>&1'


rule render_report:
    input:
        summary="results/{system}/metrics.json",
        figures="results/{system}/figures",
        code=stage_code("report"),
    output:
        "results/{system}/training_report.md",
    log:
        "results/logs/{system}/render_report.log",
    benchmark:
        "results/benchmarks/{system}/render_report.tsv"
    conda:
        stage_env("report")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        cfg=stage_params("report"),
        stage=stage_spec("report"),
        upstream=upstream_params("report"),
    shell:
        "python -m neurotrain.runner report --system {wildcards.system:q} --params {params.cfg:q} --stage-spec {params.stage:q}"
        ' --run-dir "$(dirname {output:q})" --out {output:q} > {log:q} 2>&1'


# The project report: every system's headline metrics beside its bar and ceiling.
rule index_report:
    input:
        reports=expand("results/{system}/training_report.md", system=SYSTEMS),
        summaries=expand("results/{system}/metrics.json", system=SYSTEMS),
        training_logs=expand("results/{system}/model/training_log.json", system=SYSTEMS),
        figures=expand("results/{system}/figures", system=SYSTEMS),
        code=INDEX_CODE,
    output:
        index="results/report.md",
        summaries=report(
            directory("results/summaries"),
            patterns=["{system}.html"],
            caption="../report/summary.rst",
            category="{system}",
        ),
    log:
        "results/logs/index_report.log",
    conda:
        ANALYSIS_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        systems=",".join(SYSTEMS),
    shell:
        "python -m neurotrain.runner index --systems {params.systems:q} --results results --out {output.index:q}"
        " --summaries {output.summaries:q} > {log:q} 2>&1"

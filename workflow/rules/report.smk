# Figures and the Jinja markdown report (cheap: run on the submitting host).


localrules:
    render_figures,
    render_report,
    aggregate_run,
    index_report,


rule render_figures:
    input:
        summary="results/{system}/{run}/seed{seed}/metrics.json",
        training_log="results/{system}/{run}/seed{seed}/model/training_log.json",
        run_config="results/{system}/{run}/seed{seed}/model/config.json",
        weights="results/{system}/{run}/seed{seed}/weights",
        outputs="results/{system}/{run}/seed{seed}/outputs",
        population="results/{system}/{run}/seed{seed}/population",
        code=stage_code("figures"),
    output:
        report(
            directory("results/{system}/{run}/seed{seed}/figures"),
            patterns=["{name}.png"],
            caption="../report/figure.rst",
            category="{system}",
        ),
    log:
        "results/logs/{system}/{run}/seed{seed}/render_figures.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/render_figures.tsv"
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
        summary="results/{system}/{run}/seed{seed}/metrics.json",
        figures="results/{system}/{run}/seed{seed}/figures",
        code=stage_code("report"),
    output:
        "results/{system}/{run}/seed{seed}/training_report.md",
    log:
        "results/logs/{system}/{run}/seed{seed}/render_report.log",
    benchmark:
        "results/benchmarks/{system}/{run}/seed{seed}/render_report.tsv"
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


# A run's replicates pooled: every headline metric as mean, SD and 95% interval across seeds,
# each bar judged on the mean, the seed spread of the system's curves.
rule aggregate_run:
    input:
        summaries=seed_files("metrics.json"),
        reports=seed_files("training_report.md"),
        training_logs=seed_files("model/training_log.json"),
        code=aggregate_code,
    output:
        summary="results/{system}/{run}/aggregate.json",
        report="results/{system}/{run}/run_report.md",
        figures=report(
            directory("results/{system}/{run}/figures"),
            patterns=["{name}.png"],
            caption="../report/aggregate.rst",
            category="{system}",
        ),
    log:
        "results/logs/{system}/{run}/aggregate_run.log",
    conda:
        ANALYSIS_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        seeds=lambda wildcards, input: [str(Path(f).parent) for f in input.summaries],
        overrides=run_overrides,
    shell:
        "python -m neurotrain.runner aggregate --system {wildcards.system:q} --run {wildcards.run:q}"
        ' --seed-dirs {params.seeds:q} --overrides {params.overrides:q} --out-dir "$(dirname {output.summary:q})" > {log:q} 2>&1'


# The project report: every run's pooled headline metrics beside its bar and reference, and per
# system a comparison of its runs (results/<system>/runs.md).
rule index_report:
    input:
        aggregates=[f"{r.folder}/aggregate.json" for r in BUILT],
        reports=all_reports(),
        code=INDEX_CODE,
    output:
        index="results/report.md",
        comparisons=expand("results/{system}/runs.md", system=SYSTEMS),
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
        runs=",".join(f"{r.system}/{r.name}" for r in BUILT),
    shell:
        "python -m neurotrain.runner index --runs {params.runs:q} --results results --out {output.index:q}"
        " --summaries {output.summaries:q} > {log:q} 2>&1"

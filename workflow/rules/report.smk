# Report: the resolved config, tables, figures and one self-contained report.html per config;
# with a tuning block also the validation Pareto fronts, the selections and the verdict.


rule save_config:
    output:
        f"{REPORTS}/config.yaml",
    log:
        f"logs/{NAME}/save_config.log",
    params:
        config=config,
    run:
        save_yaml(params.config, output[0], log[0])


rule feature_figures:
    input:
        specs=expand(
            PATHS["encoder_spec"],
            encoder=config["figures"]["feature_encoders"],
        ),
        pair=pair_manifest(shard_of(PLAN.figure_patient)),
        baseline=PATHS["registered"].format(
            method=config["baseline"], shard=shard_of(PLAN.figure_patient)
        ),
    output:
        multiext(
            f"{REPORTS}/features/",
            "pca.png",
            "distance_curves.png",
            "commutativity.png",
        ),
    log:
        f"logs/{NAME}/feature_figures.log",
    conda:
        "../../envs/featreg.yaml"
    resources:
        gpu=GPU,
        mem_mb=COMPUTE["mem_mb"],
        runtime=COMPUTE["runtime_min"],
    params:
        pair=pair_dir(PLAN.figure_patient),
        field=PATHS["displacement"].format(
            method=config["baseline"], patient=PLAN.figure_patient
        ),
        out=lambda wildcards, output: Path(output[0]).parent,
        device=DEVICE,
    shell:
        "featreg feature-figures --encoders {input.specs} --pair {params.pair} "
        "--displacement {params.field} --out {params.out} --device {params.device} > {log} 2>&1"


rule report:
    input:
        unpack(tuning_report_inputs),
        metrics=f"{REPORTS}/metrics.csv",
        config=f"{REPORTS}/config.yaml",
        features=rules.feature_figures.output if FEATURE_FIGURES else [],
    output:
        html=report(
            f"{REPORTS}/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        summary=f"{REPORTS}/summary.csv",
        table=f"{REPORTS}/table1.md",
    log:
        f"logs/{NAME}/report.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        features=f"--feature-figures {REPORTS}/features" if FEATURE_FIGURES else "",
        tuning=tuning_report_options,
        out_dir=lambda wildcards, output: Path(output.html).parent,
        pairs=f"{RESULTS}/pairs",
        results=f"{RESULTS}/registration",
    shell:
        "featreg report --metrics {input.metrics} --config {input.config} "
        "--out-dir {params.out_dir} --pairs {params.pairs} --results {params.results} "
        "{params.features} {params.tuning} > {log} 2>&1"

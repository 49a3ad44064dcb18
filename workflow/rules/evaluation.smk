# Evaluation: every shard's metric tables (before registration, written by its preprocess
# job; a method's, by its register job) are collected, the test split's into metrics.csv,
# the validation split's (tuning grid) into tuning/metrics.csv, never mixed.


rule collect_metrics:
    input:
        all_metric_shards(),
    output:
        f"{REPORTS}/metrics.csv",
    log:
        f"logs/{NAME}/collect_metrics.log",
    conda:
        "../../envs/featreg.yaml"
    shell:
        "featreg collect-metrics --out {output} {input} > {log} 2>&1"


if PLAN.tuning:

    rule collect_validation_metrics:
        input:
            validation_metric_shards(["initial", *PLAN.grid_methods]),
        output:
            f"{REPORTS}/tuning/metrics.csv",
        log:
            f"logs/{NAME}/collect_validation_metrics.log",
        conda:
            "../../envs/featreg.yaml"
        shell:
            "featreg collect-metrics --out {output} {input} > {log} 2>&1"

    rule select_setting:
        input:
            lambda wildcards: validation_metric_shards(
                PLAN.tuning.grids[wildcards.base]
            ),
        output:
            selection=PATHS["selection"],
            method=PATHS["tuned_method"],
        log:
            f"logs/{NAME}/tuning/select/{{base}}.log",
        wildcard_constraints:
            base=names_pattern(PLAN.tuning.grids),
        conda:
            "../../envs/featreg.yaml"
        params:
            spec=lambda wildcards: canonical_json(
                PLAN.tuning.selection_spec(wildcards.base)
            ),
        shell:
            "featreg select-setting --spec {params.spec:q} --metrics {input} "
            "--out {output.selection} --method-out {output.method} > {log} 2>&1"

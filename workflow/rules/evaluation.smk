# Evaluation: metrics of every pair of a shard, before registration ("initial") and per method.


wildcard_constraints:
    method="|".join(re.escape(name) for name in METHODS),
    shard=r"s\d\d\d+",


rule evaluate_initial:
    input:
        shard_pair_files,
    output:
        f"{RESULTS}/metrics/initial/{{shard}}.csv",
    log:
        f"logs/{NAME}/metrics/initial/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        pairs=shard_pair_dirs,
    shell:
        "featreg evaluate --pairs {params.pairs} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        pairs=shard_pair_files,
        manifest=f"{RESULTS}/registration/{{method}}/shards/{{shard}}.json",
    output:
        f"{RESULTS}/metrics/{{method}}/{{shard}}.csv",
    log:
        f"logs/{NAME}/metrics/{{method}}/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        method=method_json,
        pairs=shard_pair_dirs,
    shell:
        "featreg evaluate --pairs {params.pairs} --method-json {params.method:q} "
        "--results-dir {RESULTS}/registration/{wildcards.method} --out {output} > {log} 2>&1"


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

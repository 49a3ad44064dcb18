# Registration: one job per (method, shard) optimises the shard's pairs in batches,
# writes one result folder per patient and the shard manifest with each pair's status,
# then evaluates the results into the shard's metric table (in the same job: a job per
# (method, shard) for evaluation alone would nearly double the DAG at cohort scale).
# Test methods run on the test shards (s000, ...), tuning grid points on the validation
# shards (v000, ...); every method comes as a file (results/<name>/methods/<method>.json),
# a tuned one written by its selection job. FFD methods run in rule register (batched, on
# the GPU when there is one); elastix methods in rule register_elastix (one pair at a time
# on compute.threads CPU threads).


rule register:
    input:
        unpack(registration_inputs),
    output:
        manifest=PATHS["registered"],
        metrics=PATHS["metrics"],
    log:
        f"logs/{NAME}/registration/{{method}}/{{shard}}.log",
    wildcard_constraints:
        method=names_pattern(PLAN.methods_of_kind("ffd")),
    conda:
        "../../envs/featreg.yaml"
    threads: COMPUTE["threads"]
    resources:
        gpu=GPU,
        mem_mb=COMPUTE["mem_mb"],
        runtime=COMPUTE["runtime_min"],
    params:
        out_dir=PATHS["registration"],
    shell:
        "featreg register --method-file {input.method} --shard {input.shard} "
        "--out-dir {params.out_dir} --manifest {output.manifest} --metrics {output.metrics} "
        f"{REGISTER_OPTIONS} > {{log}} 2>&1"


if PLAN.methods_of_kind("elastix"):

    rule register_elastix:
        input:
            pairs=PATHS["pairs"],
            method=PATHS["method"],
        output:
            manifest=PATHS["registered"],
            metrics=PATHS["metrics"],
        log:
            f"logs/{NAME}/registration/{{method}}/{{shard}}.log",
        wildcard_constraints:
            method=names_pattern(PLAN.methods_of_kind("elastix")),
        conda:
            "../../envs/featreg.yaml"
        threads: COMPUTE["threads"]
        resources:
            mem_mb=COMPUTE["mem_mb"],
            runtime=COMPUTE["runtime_min"],
        params:
            out_dir=PATHS["registration"],
        shell:
            "featreg register --method-file {input.method} --shard {input.pairs} "
            "--out-dir {params.out_dir} --manifest {output.manifest} --metrics {output.metrics} "
            "--threads {threads} > {log} 2>&1"


rule method_file:
    output:
        PATHS["method"],
    log:
        f"logs/{NAME}/methods/{{method}}.log",
    wildcard_constraints:
        method=names_pattern(PLAN.runnable),
    params:
        method=lambda wildcards: PLAN.runnable[wildcards.method].to_json(),
    run:
        save_text(params.method, output[0], log[0])

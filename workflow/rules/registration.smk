# Registration: one job per (method, shard) optimises the shard's pairs in batches and
# writes one result folder per patient; the shard manifest records each pair's status.


rule register:
    input:
        unpack(registration_inputs),
    output:
        f"{RESULTS}/registration/{{method}}/shards/{{shard}}.json",
    log:
        f"logs/{NAME}/registration/{{method}}/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    threads: COMPUTE["threads"]
    resources:
        gpu=GPU,
        mem_mb=COMPUTE["mem_mb"],
        runtime=COMPUTE["runtime_min"],
    params:
        method=method_json,
        pairs=shard_pair_dirs,
        encoder=encoder_options,
        batch_size=COMPUTE["batch_size"],
    shell:
        "featreg register --method-json {params.method:q} {params.encoder} "
        "--pairs {params.pairs} "
        "--out-dir {RESULTS}/registration/{wildcards.method} --manifest {output} "
        "--device {DEVICE} --batch-size {params.batch_size} > {log} 2>&1"

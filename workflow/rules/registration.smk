# Registration: one job per (method, shard) optimises the shard's pairs in batches and
# writes one result folder per patient; the shard manifest records each pair's status.
# Test methods run on the test shards (s000, ...), tuning grid points on the validation
# shards (v000, ...); a tuned method reads its settings from its selection record.


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
        method=method_option,
        pairs=shard_pair_dirs,
        encoder=encoder_options,
        batch_size=COMPUTE["batch_size"],
        compile="--compile" if COMPUTE["compile"] else "",
        out_dir=lambda wildcards: f"{RESULTS}/registration/{wildcards.method}",
        device=DEVICE,
    shell:
        "featreg register {params.method} {params.encoder} "
        "--pairs {params.pairs} "
        "--out-dir {params.out_dir} --manifest {output} "
        "--device {params.device} --batch-size {params.batch_size} {params.compile} > {log} 2>&1"

# Encoders: one spec file per encoder (canonical JSON, rewritten only when its entry changes) and the
# fixed-image features (and the moving image's, for methods that encode once), computed once per
# encoder and patient, reused by every method.


rule fetch_checkpoint:
    output:
        "{folder}/{filename}",
    log:
        "logs/checkpoints/{folder}/{filename}.log",
    wildcard_constraints:
        filename="|".join(re.escape(name) for name in CHECKPOINT_NAMES),
    conda:
        "../../envs/featreg.yaml"
    params:
        name=lambda wildcards: CHECKPOINT_NAMES[wildcards.filename],
    shell:
        "featreg fetch-checkpoints --dest {wildcards.folder} {params.name} > {log} 2>&1"


rule encoder_spec:
    input:
        weights=lambda wildcards: encoder_checkpoint(wildcards.encoder),
    output:
        PATHS["encoder_spec"],
    log:
        f"logs/{NAME}/encoders/{{encoder}}.log",
    params:
        spec=lambda wildcards: canonical_json(
            {wildcards.encoder: config["encoders"][wildcards.encoder]}
        ),
    run:
        save_text(params.spec, output[0], log[0])


rule cache_features:
    input:
        pairs=PATHS["pairs"],
        spec=PATHS["encoder_spec"],
    output:
        PATHS["features"],
    log:
        f"logs/{NAME}/features/{{encoder}}/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    threads: COMPUTE["threads"]
    resources:
        gpu=GPU,
        mem_mb=COMPUTE["mem_mb"],
        runtime=COMPUTE["runtime_min"],
    params:
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        moving=lambda wildcards: (
            "--moving" if PLAN.encodes_once(wildcards.encoder) else ""
        ),
    shell:
        "featreg features --encoders {input.spec} --encoder {wildcards.encoder} "
        "--shard {input.pairs} --out-dir {params.out_dir} --manifest {output} {params.moving} "
        f"--device {DEVICE} > {{log}} 2>&1"

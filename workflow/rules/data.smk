# Data, one job per shard (like every later stage): the synthetic cohort (when configured)
# and the preprocessed fixed/moving pairs, one folder per patient under {RESULTS}/pairs/.
# Each job skips the patients already done, records each patient's status in its shard
# manifest (the declared output) and lets a bad patient fail alone.


if DATASET["kind"] == "synthetic":

    rule synthesize:
        output:
            PATHS["synthetic"],
        log:
            f"logs/{NAME}/synthetic/{{shard}}.log",
        conda:
            "../../envs/featreg.yaml"
        params:
            root=ROOT,
            seed=DATASET["synthetic"]["seed"],
            patients=shard_patient_words,
        shell:
            "featreg synth --out {params.root} --seed {params.seed} --ids {params.patients} "
            "--manifest {output} > {log} 2>&1"


rule preprocess:
    input:
        preprocess_sources,
    output:
        PATHS["pairs"],
    log:
        f"logs/{NAME}/preprocess/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        root=ROOT,
        pairs=lambda wildcards, output: Path(output[0]).parent.parent,
        patients=shard_patient_words,
        options=preprocess_options(),
    shell:
        "featreg preprocess --root {params.root} --out {params.pairs} --patients {params.patients} "
        "{params.options} --manifest {output} > {log} 2>&1"

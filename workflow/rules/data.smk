# Data, one job per shard (like every later stage): the synthetic cohort (when configured)
# and the preprocessed fixed/moving pairs, one folder per patient under {RESULTS}/pairs/,
# with the shard's metrics before registration (the "initial" rows of metrics.csv).
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
        manifest=PATHS["pairs"],
        metrics=PATHS["initial_metrics"],
    log:
        f"logs/{NAME}/preprocess/{{shard}}.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        root=ROOT,
        # the pairs folder holds shards/<shard>.json: derived from the output, as lint asks
        pairs=lambda wildcards, output: Path(output.manifest).parent.parent,
        patients=shard_patient_words,
    shell:
        "featreg preprocess --root {params.root} --out {params.pairs} --patients {params.patients} "
        f"{preprocess_options()} "
        "--manifest {output.manifest} --metrics {output.metrics} > {log} 2>&1"

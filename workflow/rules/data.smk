# Data: the synthetic cohort (when configured) and one preprocessed fixed/moving pair per patient.


if DATASET["kind"] == "synthetic":

    rule synthesize_patient:
        output:
            directory(f"{ROOT}/database/{{subset}}/{{patient}}"),
        log:
            f"logs/synthetic/{ROOT.replace('/', '_')}/{{subset}}/{{patient}}.log",
        conda:
            "../../envs/featreg.yaml"
        params:
            seed=DATASET["synthetic"]["seed"],
            number=lambda wildcards: patient_number(wildcards.patient),
        shell:
            "featreg synth --out {ROOT} --start {params.number} --patients 1 "
            "--seed {params.seed} > {log} 2>&1"


rule preprocess:
    input:
        lambda wildcards: source_dir(wildcards.patient),
    output:
        multiext(
            f"{RESULTS}/pairs/{{patient}}/",
            "fixed_image.nii.gz",
            "fixed_label.nii.gz",
            "moving_image.nii.gz",
            "moving_label.nii.gz",
            "pair.json",
        ),
    log:
        f"logs/{NAME}/preprocess/{{patient}}.log",
    conda:
        "../../envs/featreg.yaml"
    params:
        options=lambda wildcards: " ".join(
            [
                f"--spacing {config['preprocess']['spacing_mm']}",
                f"--size {config['preprocess']['size']}",
                (
                    "--clip-percentiles {} {}".format(
                        *config["preprocess"]["clip_percentiles"]
                    )
                    if config["preprocess"]["clip_percentiles"]
                    else ""
                ),
            ]
        ),
    shell:
        "featreg preprocess --root {ROOT} --out {RESULTS}/pairs "
        "--patients {wildcards.patient} {params.options} > {log} 2>&1"

# Config validation, the experiment's expansion (patients, shards, methods) and input functions.
import json
import re
from pathlib import Path

from snakemake.utils import validate

from featreg.data.acdc import list_patients, select_patients
from featreg.experiment import method_table, patient_number, shard_patients

validate(config, "../schemas/config.schema.yaml")

NAME = config["name"]
RESULTS = f"results/{NAME}"
REPORTS = f"reports/{NAME}"
DATASET = config["dataset"]
ROOT = DATASET["root"]
COMPUTE = config["compute"]
DEVICE = COMPUTE["device"]
GPU = 1 if COMPUTE["gpu_jobs"] else 0

METHODS = method_table(config)
ENCODERS = sorted({m.encoder for m in METHODS.values() if m.encoder is not None})


def cohort_patients():
    """Patient ids of the dataset before the split is applied."""
    if DATASET["kind"] == "synthetic":
        count = DATASET["synthetic"]["patients"]
        return [f"patient{k:03d}" for k in range(1, count + 1)]
    return list_patients(ROOT)


PATIENTS = select_patients(cohort_patients(), DATASET["split"])
SHARDS = shard_patients(PATIENTS, COMPUTE["shard_size"])


FIGURE_PATIENT = config["figures"]["patient"] or PATIENTS[0]
FEATURE_FIGURES = bool(config["figures"]["feature_encoders"])


def shard_of(patient):
    """The shard holding a patient."""
    return next(shard for shard, members in SHARDS.items() if patient in members)


def source_dir(patient):
    """The ACDC-layout folder of one patient (training holds 1-100, testing the rest)."""
    subset = "training" if patient_number(patient) <= 100 else "testing"
    return f"{ROOT}/database/{subset}/{patient}"


def pair_dir(patient):
    return f"{RESULTS}/pairs/{patient}"


def shard_pair_files(wildcards):
    return [f"{pair_dir(p)}/pair.json" for p in SHARDS[wildcards.shard]]


def shard_pair_dirs(wildcards):
    return [pair_dir(p) for p in SHARDS[wildcards.shard]]


def method_json(wildcards):
    return METHODS[wildcards.method].to_json()


def registration_inputs(wildcards):
    """Pairs of the shard, plus the cached fixed-image features when the method uses an encoder."""
    inputs = {"pairs": shard_pair_files(wildcards)}
    encoder = METHODS[wildcards.method].encoder
    if encoder is not None:
        inputs["features"] = f"{RESULTS}/features/{encoder}/{wildcards.shard}.json"
        inputs["spec"] = f"{RESULTS}/encoders/{encoder}.yaml"
    return inputs


def encoder_options(wildcards, input):
    """Command-line options that point a feature method at its encoder and cached features."""
    if "spec" not in input.keys():
        return ""
    return f"--encoders {input.spec} --features {input.features}"


def all_metric_shards():
    methods = ["initial", *METHODS]
    return [f"{RESULTS}/metrics/{m}/{s}.csv" for m in methods for s in SHARDS]

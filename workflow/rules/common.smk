# Config validation and the experiment's plan at parse time; then paths and input functions.
import json
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

import yaml

from featreg.data.acdc import patient_dir
from featreg.io import write_text_atomic
from featreg.errors import FeatregError
from featreg.encoders.checkpoints import CHECKPOINTS
from featreg.experiment.plan import ExperimentPlan
from featreg.experiment.tuning import TUNED_SUFFIX


def stop(problem):
    """End the run before any job with a user mistake's one-line message (no traceback)."""
    sys.exit(f"featreg: config error: {problem}")


def checked(function, *args, **kwargs):
    """``function(*args, **kwargs)``; a FeatregError (a bad config or dataset) stops the run."""
    try:
        return function(*args, **kwargs)
    except FeatregError as exc:
        stop(exc)


def schema_problem(exc):
    """The key and the problem of a schema violation (jsonschema's error, inside Snakemake's)."""
    error = exc.__context__
    if not hasattr(error, "json_path"):
        return str(exc)
    return f"{error.json_path.removeprefix('$.')}: {error.message}"


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    stop(schema_problem(exc))

NAME = config["name"]
RESULTS = f"results/{NAME}"
REPORTS = f"reports/{NAME}"
DATASET = config["dataset"]
ROOT = DATASET["root"]
COMPUTE = config["compute"]
DEVICE = COMPUTE["device"]
# Options of every FFD register job, in its command as written (not per-job params).
REGISTER_OPTIONS = f"--device {DEVICE} --batch-size {COMPUTE['batch_size']}" + (
    " --compile" if COMPUTE["compile"] else ""
)
GPU = 1 if COMPUTE["gpu_jobs"] else 0

# The experiment: methods per split, patients and shards, built and checked once
# (featreg.experiment.plan); a config mistake stops the run here, before any job.
PLAN = checked(ExperimentPlan.build, config)
logger.info(PLAN.summary())
FEATURE_FIGURES = bool(config["figures"]["feature_encoders"])

# Every path more than one rule names, as a template of its wildcards.
PATHS = {
    "synthetic": f"{RESULTS}/synthetic/{{shard}}.json",
    "pair": f"{RESULTS}/pairs/{{patient}}",
    "pairs": f"{RESULTS}/pairs/shards/{{shard}}.json",
    "encoder_spec": f"{RESULTS}/encoders/{{encoder}}.json",
    "features": f"{RESULTS}/features/{{encoder}}/{{shard}}.json",
    "method": f"{RESULTS}/methods/{{method}}.json",
    "tuned_method": f"{RESULTS}/methods/{{base}}{TUNED_SUFFIX}.json",
    "registration": f"{RESULTS}/registration/{{method}}",
    "registered": f"{RESULTS}/registration/{{method}}/shards/{{shard}}.json",
    "displacement": f"{RESULTS}/registration/{{method}}/{{patient}}/displacement.nii.gz",
    "metrics": f"{RESULTS}/metrics/{{method}}/{{shard}}.csv",
    "initial_metrics": f"{RESULTS}/metrics/initial/{{shard}}.csv",
    "selection": f"{RESULTS}/tuning/selected/{{base}}.json",
}


def names_pattern(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    method=names_pattern(PLAN.runnable | PLAN.tuned),
    shard=r"[sv]\d\d\d+",


def shard_of(patient):
    """The shard holding a patient."""
    return next(shard for shard, members in PLAN.shards.items() if patient in members)


def source_dir(patient):
    """The folder of one ACDC patient, in either layout (as `featreg preprocess` reads it)."""
    return str(patient_dir(ROOT, patient))


def pair_dir(patient):
    return PATHS["pair"].format(patient=patient)


def pair_manifest(shard):
    """The preprocess job's manifest of a shard (its pairs are ready once it exists)."""
    return PATHS["pairs"].format(shard=shard)


# Per shard, its patients as command-line words, joined once here (params run per job).
# Later jobs read the shard's pair folders from its manifest (`--shard`), not the command line.
SHARD_PATIENT_WORDS = {
    shard: " ".join(members) for shard, members in PLAN.all_shards.items()
}


def shard_patient_words(wildcards):
    return SHARD_PATIENT_WORDS[wildcards.shard]


def selection_file(base):
    return PATHS["selection"].format(base=base)


def canonical_json(data):
    """The one form a spec file is written in (and its rule's params are compared in)."""
    return json.dumps(data, sort_keys=True)


def registration_inputs(wildcards):
    """The method's file (written from the config, or by the selection job for a tuned method)
    and the shard: its encoder's feature manifest for a feature method (the pairs, the
    encoder's spec and the cached features; it is newer than both), else its pairs' manifest.
    One edge each: every input of every register job costs the plan time at cohort scale.
    """
    encoder = PLAN.encoder_of[wildcards.method]
    if encoder is None:
        shard = pair_manifest(wildcards.shard)
    else:
        shard = PATHS["features"].format(encoder=encoder, shard=wildcards.shard)
    return {"method": PATHS["method"].format(method=wildcards.method), "shard": shard}


def all_metric_shards():
    """Metric tables of the test split: before registration and per test method."""
    return [
        PATHS["metrics"].format(method=m, shard=s)
        for m in PLAN.reported
        for s in PLAN.shards
    ]


def validation_metric_shards(methods):
    """Metric tables of ``methods`` on the validation split."""
    return [
        PATHS["metrics"].format(method=m, shard=s)
        for m in methods
        for s in PLAN.val_shards
    ]


def tuning_report_inputs(wildcards):
    """The validation metrics and every selection record, when the config tunes."""
    if not PLAN.tuning:
        return {}
    return {
        "validation": f"{REPORTS}/tuning/metrics.csv",
        "selections": [selection_file(base) for base in PLAN.tuning.grids],
    }


def tuning_report_options(wildcards, input):
    if not PLAN.tuning:
        return ""
    return f"--validation-metrics {input.validation} --selections {' '.join(input.selections)}"


def preprocess_options():
    """Command-line options of `featreg preprocess` from the config's preprocess block."""
    options = config["preprocess"]
    clip = options["clip_percentiles"]
    slices = options["slices"]
    return " ".join(
        [
            f"--spacing {options['spacing_mm']}",
            f"--size {options['size']}",
            f"--clip-percentiles {clip[0]} {clip[1]}" if clip else "",
            f"--slices {slices if isinstance(slices, str) else ' '.join(map(str, slices))}",
            "--labels " + " ".join(f"{n}={v}" for n, v in config["labels"].items()),
        ]
    )


def preprocess_sources(wildcards):
    """The shard's synthetic manifest, its patients' ACDC folders, or the cohort manifest and its patients' files."""
    if DATASET["kind"] == "synthetic":
        return PATHS["synthetic"].format(shard=wildcards.shard)
    patients = PLAN.all_shards[wildcards.shard]
    if PLAN.manifest is not None:
        return [
            ROOT,
            *(str(f) for p in patients for f in PLAN.manifest[p].files.values()),
        ]
    return [source_dir(p) for p in patients]


# Checkpoint file name -> table entry, for the rule that downloads official weights.
# Entries without a direct URL (MedSAM) are left out: a missing one is a missing input.
CHECKPOINT_NAMES = {
    e.filename: name for name, e in CHECKPOINTS.items() if e.url is not None
}


def encoder_checkpoint(encoder):
    """The encoder's checkpoint file (fetched by rule fetch_checkpoint when missing), if any."""
    weights = config["encoders"][encoder].get("checkpoint")
    return [weights] if weights else []


def save_yaml(data, path, log):
    """Write ``data`` as YAML atomically and note it in the rule's log."""
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")


def save_text(text, path, log):
    """Write ``text`` atomically and note it in the rule's log."""
    write_text_atomic(path, text)
    Path(log).write_text(f"wrote {path}\n")

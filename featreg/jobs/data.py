"""The data jobs: write a shard's synthetic patients, and preprocess a shard's patients into pairs."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from featreg.data.acdc import list_patients, patient_number, select_patients, subset_of
from featreg.data.cohort import patient_reader
from featreg.data.pair_manifest import read_pair_manifest, write_pair_manifest
from featreg.data.pairs import slice_dir, write_pair, write_pair_failure
from featreg.data.preprocess import PreprocessOptions, patient_slices, preprocess_patient
from featreg.data.synthetic import synth_patient, write_patient
from featreg.errors import InputError
from featreg.io import write_json_atomic
from featreg.jobs.resume import Statuses, ok

COHORT_MANIFEST = "preprocess.json"
"""Written into the pairs folder by :func:`preprocess_cohort`: the options and each patient's status."""

SYNTHETIC_RECORD = "synthetic.json"
"""Written last into a synthetic patient's folder by :func:`synthesize_shard`: its seed and number."""

SLICES_RECORD = "slices.json"
"""Written last into a patient's folder that holds one pair per slice: the options, sources and slices."""

log = logging.getLogger(__name__)


def _synthesized(folder: Path, seed: int, number: int) -> bool:
    record = folder / SYNTHETIC_RECORD
    try:
        return json.loads(record.read_text()) == {"seed": seed, "number": number}
    except (OSError, json.JSONDecodeError):
        return False


def synthesize_shard(root: str | Path, patients: Sequence[str], manifest: str | Path, *, seed: int) -> Path:
    """Write the synthetic patients of a shard under ``root`` (ACDC layout), skipping those already written.

    A patient counts as written when its folder holds :data:`SYNTHETIC_RECORD` with
    this seed and number (written after its images), so a killed job resumes and a
    root written with another seed is rewritten rather than reused.
    """
    statuses: Statuses = {}
    for patient in tqdm(patients, desc="synth", unit="patient"):
        number = patient_number(patient)
        if _synthesized(Path(root) / "database" / subset_of(patient) / patient, seed, number):
            statuses[patient] = ok(resumed=True)
            continue
        folder = write_patient(root, synth_patient(seed, number))
        write_json_atomic(folder / SYNTHETIC_RECORD, {"seed": seed, "number": number})
        statuses[patient] = ok()
    return write_json_atomic(manifest, {"seed": seed, "patients": statuses})


def _preprocessed(patient_dir: Path, options: dict[str, Any]) -> bool:
    """The patient's pairs exist, were made with ``options`` and are newer than each of their source files.

    The record is the pair's ``pair.json``, or :data:`SLICES_RECORD` for a patient with a pair per slice.
    """
    record_path = patient_dir / (SLICES_RECORD if (patient_dir / SLICES_RECORD).is_file() else "pair.json")
    try:
        record = json.loads(record_path.read_text())
        made = record_path.stat().st_mtime
        return record.get("options") == options and all(Path(f).stat().st_mtime <= made for f in record["source"].values())
    except (OSError, KeyError, json.JSONDecodeError):
        return False


def preprocess_shard(
    root: str | Path, patients: Sequence[str], out: str | Path, manifest: str | Path, options: PreprocessOptions
) -> Path:
    """Preprocess the patients of a shard into ``out/<patient>/``, skipping pairs already made from the same sources.

    A patient gives one pair, or one pair per slice in ``out/<patient>/slice<NN>/``
    (``options.slices``; :mod:`featreg.data.pairs`). A patient or slice that fails
    leaves a folder holding only :data:`~featreg.data.pairs.PAIR_FAILURE` (its reason), which the
    registration and evaluation of its shard report as that pair's failure; the
    others go on.
    """
    wanted = json.loads(json.dumps(asdict(options)))  # as pair.json stores them (tuples become lists)
    read_patient = patient_reader(root, options.labels.values())
    statuses: Statuses = {}
    for patient in tqdm(patients, desc="preprocess", unit="patient"):
        patient_dir = Path(out) / patient
        if _preprocessed(patient_dir, wanted):
            statuses[patient] = ok(resumed=True)
            continue
        shutil.rmtree(patient_dir, ignore_errors=True)
        try:
            record = read_patient(patient)
            if options.one_slice_per_patient:
                write_pair(preprocess_patient(record, options), patient_dir)
                statuses[patient] = ok()
                continue
            slices = patient_slices(record, options)
        except InputError as exc:
            log.error("%s", exc)
            write_pair_failure(patient_dir, patient, str(exc))
            statuses[patient] = {"status": "failed", "reason": str(exc)}
            continue
        failed = []
        for index in slices:
            try:
                write_pair(preprocess_patient(record, options, index), slice_dir(patient_dir, index))
            except InputError as exc:
                log.error("%s", exc)
                write_pair_failure(slice_dir(patient_dir, index), patient, str(exc))
                failed.append(index)
        source = {key: str(path) for key, path in record.files.items()}
        write_json_atomic(patient_dir / SLICES_RECORD, {"options": wanted, "source": source, "slices": slices})
        statuses[patient] = ok() | {"slices": len(slices), "failed_slices": failed}
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("%d of %d patients failed preprocessing: %s", len(failed), len(patients), ", ".join(failed))
    pairs = [str(Path(out) / patient) for patient in patients]
    return write_pair_manifest(manifest, wanted, pairs, statuses)


def preprocess_cohort(
    root: str | Path,
    out: str | Path,
    split: str | Sequence[int | str] = "test",
    options: PreprocessOptions = PreprocessOptions(),
) -> list[Path]:
    """Write ``out/<patient>/`` for every selected patient with :func:`preprocess_shard`.

    As in the workflow, pairs already made from the same sources and options
    are kept, a bad patient's folder holds only its ``failed.json``, and the
    statuses go to ``out/`` :data:`COHORT_MANIFEST`. All patients are attempted;
    if any failed, an :class:`InputError` listing them is raised at the end.
    """
    patients = select_patients(list_patients(root), split)
    if not patients:
        raise InputError(f"no patients of split {split!r} under the ACDC root", path=root)
    manifest = preprocess_shard(root, patients, out, Path(out) / COHORT_MANIFEST, options)
    statuses = read_pair_manifest(manifest)["patients"]
    failures = [status["reason"] for status in statuses.values() if status["status"] != "ok"]
    if failures:
        raise InputError(f"{len(failures)} of {len(patients)} patients failed:\n" + "\n".join(failures))
    return [Path(out) / patient for patient in patients]


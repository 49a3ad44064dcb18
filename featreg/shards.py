"""Shard jobs: what one workflow job does with a shard of patients.

A shard is a list of patients (``featreg.experiment.shard_patients``: consecutive
patients in sorted order, so appending patients changes only the last shard and
adds new ones). Every job (synthesize, preprocess, register, evaluate) pays its
start-up once for the whole shard, writes one output per patient and finally a
manifest (the job's declared output) recording each patient's status. A patient
whose output already exists and is current is not redone, so a killed job resumes
where it stopped and a rerun of a grown shard does only its new patients; one bad
patient fails alone, with its reason in the manifest and downstream in its
``run.json`` and metrics row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from featreg.io import atomic_path, write_json_atomic
from featreg.errors import FeatregError, InputError
from featreg.data.acdc import patient_number, subset_of
from featreg.experiment import Method

if TYPE_CHECKING:
    from featreg.data.preprocess import PreprocessOptions
    from featreg.encoders.registry import EncoderSpec

SYNTHETIC_RECORD = "synthetic.json"
"""Written last into a synthetic patient's folder by :func:`synthesize_shard`: its seed and number."""

PAIR_FAILURE = "failed.json"
"""The only file of a pair folder whose preprocessing failed: the patient and the reason."""

log = logging.getLogger(__name__)


def fingerprint(method: Method, encoder_identity: dict[str, Any] | None) -> str:
    """A hash of everything that determines a method's result for a pair."""
    text = method.to_json() + json.dumps(encoder_identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pair_fingerprint(method_fingerprint: str, pair_dir: str | Path) -> str | None:
    """The method's fingerprint combined with the pair's ``pair.json`` (None when unreadable).

    ``pair.json`` holds the pair's source files and preprocessing options, so a
    re-preprocessed pair invalidates its results while an unchanged one keeps them.
    """
    try:
        text = (Path(pair_dir) / "pair.json").read_bytes()
    except OSError:
        return None
    return hashlib.sha256(method_fingerprint.encode() + text).hexdigest()[:16]


def _patient_of(pair_dir: Path) -> str:
    return Path(pair_dir).name


def _unreadable_reason(pair_dir: Path, exc: FeatregError) -> str:
    """Why a pair could not be read: its preprocessing failure when recorded, else the read error."""
    failure = pair_dir / PAIR_FAILURE
    if failure.is_file():
        return f"preprocessing failed: {json.loads(failure.read_text())['reason']}"
    return str(exc)


def _finished(result_dir: Path, expected: str | None) -> bool:
    run_file = result_dir / "run.json"
    if not run_file.is_file():
        return False
    try:
        run = json.loads(run_file.read_text())
    except json.JSONDecodeError:
        return False
    return expected is not None and run.get("status") == "ok" and run.get("fingerprint") == expected


def _ok(resumed: bool = False) -> dict[str, Any]:
    return {"status": "ok", "reason": ""} | ({"resumed": True} if resumed else {})


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
    from featreg.data.synthetic import synth_patient, write_patient

    statuses: dict[str, dict[str, Any]] = {}
    for patient in tqdm(patients, desc="synth", unit="patient"):
        number = patient_number(patient)
        if _synthesized(Path(root) / "database" / subset_of(patient) / patient, seed, number):
            statuses[patient] = _ok(resumed=True)
            continue
        folder = write_patient(root, synth_patient(seed, number))
        write_json_atomic(folder / SYNTHETIC_RECORD, {"seed": seed, "number": number})
        statuses[patient] = _ok()
    return write_json_atomic(manifest, {"seed": seed, "patients": statuses})


def _preprocessed(pair_dir: Path, options: dict[str, Any]) -> bool:
    """The pair exists, was made with ``options`` and is newer than each of its source files."""
    record_path = pair_dir / "pair.json"
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

    A patient that fails leaves a folder holding only :data:`PAIR_FAILURE` (its
    reason), which the registration and evaluation of its shard report as that
    patient's failure; the other patients go on.
    """
    import shutil
    from dataclasses import asdict

    from featreg.data.acdc import read_patient
    from featreg.data.pairs import write_pair
    from featreg.data.preprocess import preprocess_patient

    wanted = json.loads(json.dumps(asdict(options)))  # as pair.json stores them (tuples become lists)
    statuses: dict[str, dict[str, Any]] = {}
    for patient in tqdm(patients, desc="preprocess", unit="patient"):
        pair_dir = Path(out) / patient
        if _preprocessed(pair_dir, wanted):
            statuses[patient] = _ok(resumed=True)
            continue
        try:
            write_pair(preprocess_patient(read_patient(root, patient), options), pair_dir)
        except InputError as exc:
            log.error("%s", exc)
            shutil.rmtree(pair_dir, ignore_errors=True)
            write_json_atomic(pair_dir / PAIR_FAILURE, {"patient": patient, "reason": str(exc)})
            statuses[patient] = {"status": "failed", "reason": str(exc)}
            continue
        statuses[patient] = _ok()
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("%d of %d patients failed preprocessing: %s", len(failed), len(patients), ", ".join(failed))
    return write_json_atomic(manifest, {"options": wanted, "patients": statuses})


def _auto_batch_size(pending: Sequence[tuple[Path, str | None]], settings, encoder, device) -> tuple[int, dict[str, Any]]:
    """``batch_size: auto`` measured on the first readable pending pair."""
    from featreg.data.pairs import load_pair
    from featreg.registration.batching import auto_batch_size

    for pair_dir, _ in pending:
        try:
            pair = load_pair(pair_dir)
        except InputError:
            continue  # reported as failed by the registration loop
        return auto_batch_size(pair.fixed[None, None], pair.moving[None, None], settings, spacing=pair.spacing,
                               encoder=encoder, device=device, limit=len(pending))  # fmt: skip
    return 1, {"requested": "auto", "batch_size": 1, "rule": "no readable pair to measure"}


def register_shard(
    method: Method,
    pair_dirs: Sequence[str | Path],
    out_dir: str | Path,
    manifest: str | Path,
    *,
    encoder_spec: EncoderSpec | None = None,
    features_manifest: str | Path | None = None,
    device: str = "auto",
    batch_size: int | str = 8,
    compile_encoder: bool = False,
) -> Path:
    """Register every pair of a shard with ``method``, batch by batch; write results and the manifest.

    ``batch_size`` ``"auto"`` is chosen from the first readable pending pair
    (:mod:`featreg.registration.batching`); ``compile_encoder`` wraps the
    encoder's backbone in ``torch.compile``.
    """
    import torch

    from featreg.data.pairs import load_pair
    from featreg.registration.io import write_failed_result, write_pair_result
    from featreg.registration.optimize import register_pairs, resolve_device
    from featreg.registration.settings import RegistrationSettings

    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise FeatregError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    if (method.encoder is None) != (encoder_spec is None):
        raise FeatregError(f"method {method.name} uses encoder {method.encoder} but the encoder spec given is {encoder_spec}")
    settings = RegistrationSettings.from_dict(method.registration_settings())
    torch_device = resolve_device(device)
    out_dir = Path(out_dir)

    encoder = None
    feature_files: dict[str, str] = {}
    identity = None
    if encoder_spec is not None:
        from featreg.encoders.cache import (
            CacheError,
            cache_fixed_features,
            load_features,
        )
        from featreg.encoders.registry import build_encoder

        spec = encoder_spec
        encoder = build_encoder(spec, device=str(torch_device))
        identity = encoder.identity()
        if compile_encoder:
            encoder.backbone.compile()
        if features_manifest is None:
            raise FeatregError(f"method {method.name} uses encoder {spec.name} but no feature manifest was given")
        feature_files = json.loads(Path(features_manifest).read_text())["features"]
    expected = fingerprint(method, identity)

    statuses: dict[str, dict[str, Any]] = {}
    pending: list[tuple[Path, str | None]] = []
    for pair_dir in map(Path, pair_dirs):
        patient = _patient_of(pair_dir)
        key = pair_fingerprint(expected, pair_dir)
        if _finished(out_dir / patient, key):
            statuses[patient] = _ok(resumed=True)
        else:
            pending.append((pair_dir, key))
    log.info("method %s: %d pairs, %d already done, %d to register on %s", method.name, len(pair_dirs), len(statuses), len(pending), torch_device)

    batch_sizing = None
    if batch_size == "auto" and pending:
        batch_size, batch_sizing = _auto_batch_size(pending, settings, encoder, torch_device)
    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")

    def fail(patient: str, reason: str, key: str | None) -> None:
        log.error("%s: %s", patient, reason)
        write_failed_result(out_dir / patient, patient=patient, method=method.name, reason=reason, fingerprint=key)
        statuses[patient] = {"status": "failed", "reason": reason}
        progress.update()

    for start in range(0, len(pending), batch_size):
        batch, pairs, keys, features = [], [], [], []
        for pair_dir, key in pending[start : start + batch_size]:
            patient = _patient_of(pair_dir)
            try:
                pair = load_pair(pair_dir)
            except InputError as exc:
                fail(patient, _unreadable_reason(pair_dir, exc), key)
                continue
            if pairs and not np.allclose(pair.spacing, pairs[0].spacing):
                # One batch shares one spacing (the mm field and the physical regulariser use it).
                fail(patient, f"spacing {pair.spacing} mm differs from the batch's {pairs[0].spacing} mm", key)
                continue
            if encoder is not None:
                if patient not in feature_files:
                    fail(patient, f"no cached features in {features_manifest}", key)
                    continue
                try:
                    features.append(load_features(feature_files[patient], identity))
                except CacheError as exc:  # unusable cache (truncated, stale): rebuild it with the loaded encoder
                    cache_fixed_features(spec, [pair_dir], [feature_files[patient]], encoder=encoder)
                    try:
                        features.append(load_features(feature_files[patient], identity))
                    except CacheError as again:
                        fail(patient, f"{exc}; rebuilding failed: {again}", key)
                        continue
                    log.warning("%s; rebuilt", exc)
            batch.append(patient)
            pairs.append(pair)
            keys.append(key)
        if not pairs:
            continue
        fixed = np.stack([p.fixed for p in pairs])[:, None]
        moving = np.stack([p.moving for p in pairs])[:, None]
        result = register_pairs(
            fixed,
            moving,
            settings,
            spacing=pairs[0].spacing,
            encoder=encoder,
            fixed_features=torch.cat(features) if features else None,
            device=torch_device,
            progress=False,
        )
        for index, (patient, pair, key) in enumerate(zip(batch, pairs, keys)):
            write_pair_result(
                out_dir / patient,
                result,
                index,
                patient=patient,
                method=method.name,
                spacing=pair.spacing,
                moving_label=pair.moving_label,
                fingerprint=key,
                batch_sizing=batch_sizing,
            )
            statuses[patient] = {"status": result.status[index], "reason": result.reason[index]}
            progress.update()
    progress.close()
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("method %s: %d failed pair(s): %s", method.name, len(failed), ", ".join(failed))
    return write_json_atomic(manifest, {"method": method.name, "fingerprint": expected, "patients": statuses})


def method_columns(method: Method | None) -> dict[str, Any]:
    """The method's columns of metrics.csv (``initial`` when no method)."""
    if method is None:
        return {"method": "initial", "encoder": "", "distance": "", "variant": "initial", "alpha": np.nan}
    return {
        "method": method.name,
        "encoder": method.encoder or "",
        "distance": method.distance or "",
        "variant": method.variant,
        "alpha": method.alpha,
    }


def evaluate_shard(
    pair_dirs: Sequence[str | Path],
    out_csv: str | Path,
    *,
    method: Method | None = None,
    results_dir: str | Path | None = None,
) -> Path:
    """Metrics of every pair of a shard, before registration (``method`` None) or after it.

    A pair or result that cannot be read gives that patient a ``failed`` row with
    the reason and NaN metrics; the other patients are evaluated.
    """
    from featreg.evaluation.evaluate import evaluate_result, failed_row

    if (method is None) != (results_dir is None):
        raise FeatregError("give both a method and its results folder, or neither (the initial row)")
    rows = []
    for pair_dir in map(Path, pair_dirs):
        patient = _patient_of(pair_dir)
        result_dir = None if results_dir is None else Path(results_dir) / patient
        try:
            row = evaluate_result(pair_dir, result_dir)
        except InputError as exc:
            reason = _unreadable_reason(pair_dir, exc)
            log.error("%s: %s", patient, reason)
            row = failed_row(patient, reason)
        rows.append(method_columns(method) | row)
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return Path(out_csv)


def collect_metrics(shard_csvs: Sequence[str | Path], out_csv: str | Path) -> Path:
    """Concatenate shard metric tables into one ``metrics.csv``, sorted by method and patient."""
    if not shard_csvs:
        raise FeatregError("no metric tables to collect")
    table = pd.concat([pd.read_csv(p, keep_default_na=True) for p in shard_csvs], ignore_index=True)
    table = table.sort_values(["method", "patient"], kind="stable")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return Path(out_csv)

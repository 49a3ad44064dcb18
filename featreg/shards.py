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
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from featreg.data import LABELS
from featreg.data.acdc import list_patients, patient_number, select_patients, subset_of
from featreg.data.cohort import patient_reader
from featreg.data.pairs import (
    expand_pair_outputs,
    expand_pairs,
    load_pair,
    pair_labels,
    pair_name,
    pair_patient,
    pair_slice,
    slice_dir,
    write_pair,
)
from featreg.data.preprocess import PreprocessOptions, patient_slices, preprocess_patient
from featreg.data.synthetic import synth_patient, write_patient
from featreg.encoders.cache import CacheError, cache_fixed_features, load_features
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec, load_specs
from featreg.errors import ConfigError, FeatregError, InputError
from featreg.evaluation.evaluate import evaluate_result, failed_row
from featreg.evaluation.statistics import TIE_BREAK, eligible_settings, select_setting, summarize
from featreg.experiment import Method, write_method_file
from featreg.io import atomic_path, write_json_atomic
from featreg.reporting.tables import patient_means, read_metrics
from featreg.registration.batching import auto_batch_size
from featreg.registration.elastix import ElastixSettings, register_elastix
from featreg.registration.io import write_elastix_result, write_failed_result, write_pair_result
from featreg.registration.optimize import register_pairs, resolve_device
from featreg.registration.settings import RegistrationSettings

COHORT_MANIFEST = "preprocess.json"
"""Written into the pairs folder by :func:`preprocess_cohort`: the options and each patient's status."""

SYNTHETIC_RECORD = "synthetic.json"
"""Written last into a synthetic patient's folder by :func:`synthesize_shard`: its seed and number."""

PAIR_FAILURE = "failed.json"
"""The only file of a pair folder whose preprocessing failed: the patient and the reason."""

SLICES_RECORD = "slices.json"
"""Written last into a patient's folder that holds one pair per slice: the options, sources and slices."""

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


def _write_failure(pair_dir: Path, patient: str, reason: str) -> None:
    """Leave only :data:`PAIR_FAILURE` in ``pair_dir``: the pair (patient or slice) failed preprocessing."""
    log.error("%s", reason)
    shutil.rmtree(pair_dir, ignore_errors=True)
    write_json_atomic(pair_dir / PAIR_FAILURE, {"patient": patient, "reason": reason})


def preprocess_shard(
    root: str | Path, patients: Sequence[str], out: str | Path, manifest: str | Path, options: PreprocessOptions
) -> Path:
    """Preprocess the patients of a shard into ``out/<patient>/``, skipping pairs already made from the same sources.

    A patient gives one pair, or one pair per slice in ``out/<patient>/slice<NN>/``
    (``options.slices``; :mod:`featreg.data.pairs`). A patient or slice that fails
    leaves a folder holding only :data:`PAIR_FAILURE` (its reason), which the
    registration and evaluation of its shard report as that pair's failure; the
    others go on.
    """
    wanted = json.loads(json.dumps(asdict(options)))  # as pair.json stores them (tuples become lists)
    read_patient = patient_reader(root, options.labels.values())
    statuses: dict[str, dict[str, Any]] = {}
    for patient in tqdm(patients, desc="preprocess", unit="patient"):
        patient_dir = Path(out) / patient
        if _preprocessed(patient_dir, wanted):
            statuses[patient] = _ok(resumed=True)
            continue
        shutil.rmtree(patient_dir, ignore_errors=True)
        try:
            record = read_patient(patient)
            if options.one_slice_per_patient:
                write_pair(preprocess_patient(record, options), patient_dir)
                statuses[patient] = _ok()
                continue
            slices = patient_slices(record, options)
        except InputError as exc:
            _write_failure(patient_dir, patient, str(exc))
            statuses[patient] = {"status": "failed", "reason": str(exc)}
            continue
        failed = []
        for index in slices:
            try:
                write_pair(preprocess_patient(record, options, index), slice_dir(patient_dir, index))
            except InputError as exc:
                _write_failure(slice_dir(patient_dir, index), patient, str(exc))
                failed.append(index)
        source = {key: str(path) for key, path in record.files.items()}
        write_json_atomic(patient_dir / SLICES_RECORD, {"options": wanted, "source": source, "slices": slices})
        statuses[patient] = _ok() | {"slices": len(slices), "failed_slices": failed}
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("%d of %d patients failed preprocessing: %s", len(failed), len(patients), ", ".join(failed))
    pairs = [str(Path(out) / patient) for patient in patients]
    return write_json_atomic(manifest, {"options": wanted, "pairs": pairs, "patients": statuses})


def shard_pair_dirs(manifest: str | Path) -> list[Path]:
    """The patients' pair folders, in shard order, that a shard manifest lists (preprocess's or features').

    The workflow's jobs read their pairs from here instead of the command line: a
    shard's pair list is then no per-job word list Snakemake has to build and format.
    """
    try:
        pairs = json.loads(Path(manifest).read_text())["pairs"]
    except FileNotFoundError:
        raise InputError("shard manifest does not exist", path=manifest) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a shard manifest (JSON with a 'pairs' list): {_first_line(exc)}", path=manifest) from None
    return [Path(pair) for pair in pairs]


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
    statuses = json.loads(manifest.read_text())["patients"]
    failures = [status["reason"] for status in statuses.values() if status["status"] != "ok"]
    if failures:
        raise InputError(f"{len(failures)} of {len(patients)} patients failed:\n" + "\n".join(failures))
    return [Path(out) / patient for patient in patients]


def features_shard(
    spec: EncoderSpec, pair_dirs: Sequence[str | Path], out_dir: str | Path, manifest: str | Path | None, device: str = "auto"
) -> dict[Path, Path]:
    """Cache the fixed-image features of a shard's pairs in ``out_dir/<patient>.pt``; write the manifest last.

    A patient with one pair per slice gets one file per slice
    (:func:`featreg.data.pairs.expand_pair_outputs`). The manifest is all a feature
    method's register job needs of the shard: the pair folders (:func:`shard_pair_dirs`),
    the encoder's spec (:func:`features_encoder_spec`) and pair name -> feature file.
    """
    out_paths = [Path(out_dir) / f"{Path(pair).name}.pt" for pair in pair_dirs]
    pairs, outs = zip(*expand_pair_outputs(pair_dirs, out_paths))
    written = cache_fixed_features(spec, pairs, outs, str(resolve_device(device)))
    if manifest is not None:
        features = {pair_name(pair): str(path) for pair, path in written.items()}
        record = {"encoder": spec.name, "spec": spec.to_dict(), "pairs": [str(p) for p in pair_dirs], "features": features}
        write_json_atomic(manifest, record)
    return written


def features_encoder_spec(features_manifest: str | Path) -> EncoderSpec:
    """The spec of the encoder whose features a manifest of :func:`features_shard` lists."""
    try:
        record = json.loads(Path(features_manifest).read_text())
        name, entry = record["encoder"], record["spec"]
    except FileNotFoundError:
        raise InputError("feature manifest does not exist", path=features_manifest) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a feature manifest of `featreg features`: {_first_line(exc)}", path=features_manifest) from None
    return EncoderSpec.from_dict(name, entry)


def method_encoder_spec(
    method: Method, spec_files: Sequence[str | Path] | None, features_manifest: str | Path | None = None
) -> EncoderSpec | None:
    """The spec of ``method``'s encoder from ``spec_files``, else from the feature manifest (None without an encoder)."""
    if method.encoder is None:
        return None
    if not spec_files and features_manifest is not None:
        spec = features_encoder_spec(features_manifest)
        if spec.name != method.encoder:
            raise ConfigError(f"method {method.name} uses encoder {method.encoder}, but {features_manifest} holds {spec.name}'s features")
        return spec
    if not spec_files:
        raise ConfigError(f"method {method.name} uses encoder {method.encoder}: give its encoder spec file or feature manifest")
    specs = load_specs(spec_files)
    if method.encoder not in specs:
        raise ConfigError(f"encoder {method.encoder} of method {method.name} is not in {', '.join(map(str, spec_files))}")
    return specs[method.encoder]


def _pending_pairs(pair_dirs: Sequence[str | Path], out_dir: Path, expected: str,
                   statuses: dict[str, dict[str, Any]]) -> list[tuple[Path, str | None]]:
    """The pairs (every slice pair of the patients' folders) without a current result, with their
    fingerprint; finished ones go into ``statuses``."""
    pending: list[tuple[Path, str | None]] = []
    for pair_dir in expand_pairs(pair_dirs):
        name = pair_name(pair_dir)
        key = pair_fingerprint(expected, pair_dir)
        if _finished(out_dir / name, key):
            statuses[name] = _ok(resumed=True)
        else:
            pending.append((pair_dir, key))
    return pending


def _fail_pair(out_dir: Path, method: Method, statuses: dict[str, dict[str, Any]], progress: tqdm, pair_dir: Path,
               reason: str, key: str | None) -> None:
    """Record a pair that has no result: its ``run.json`` (status failed) and its manifest entry."""
    name = pair_name(pair_dir)
    log.error("%s: %s", name, reason)
    write_failed_result(out_dir / name, patient=pair_patient(pair_dir), method=method.name, reason=reason,
                        fingerprint=key)
    statuses[name] = {"status": "failed", "reason": reason}
    progress.update()


def _write_manifest(method: Method, expected: str, statuses: dict[str, dict[str, Any]], manifest: str | Path) -> Path:
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("method %s: %d failed pair(s): %s", method.name, len(failed), ", ".join(failed))
    return write_json_atomic(manifest, {"method": method.name, "fingerprint": expected, "patients": statuses})


def _auto_batch_size(pending: Sequence[tuple[Path, str | None]], settings, encoder, device) -> tuple[int, dict[str, Any]]:
    """``batch_size: auto`` measured on the first readable pending pair."""
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
    threads: int = 1,
    compile_encoder: bool = False,
) -> Path:
    """Register every pair of a shard with ``method``, batch by batch; write results and the manifest.

    ``batch_size`` ``"auto"`` is chosen from the first readable pending pair
    (:mod:`featreg.registration.batching`); ``compile_encoder`` wraps the
    encoder's backbone in ``torch.compile``. An elastix method registers one pair
    at a time on the CPU with ``threads`` threads (``device``, ``batch_size`` and
    ``compile_encoder`` are the FFD's). ``pair_dirs`` are the patients' folders; each slice
    pair of a patient is a pair like any other (:func:`featreg.data.pairs.expand_pairs`);
    results go to ``out_dir/<pair name>/``.
    """
    if method.kind == "elastix":
        return _register_shard_elastix(method, pair_dirs, Path(out_dir), manifest, threads=threads)
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
    pending = _pending_pairs(pair_dirs, out_dir, expected, statuses)
    log.info("method %s: %d pairs, %d already done, %d to register on %s", method.name, len(statuses) + len(pending),
             len(statuses), len(pending), torch_device)

    batch_sizing = None
    if batch_size == "auto" and pending:
        batch_size, batch_sizing = _auto_batch_size(pending, settings, encoder, torch_device)
    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")

    def fail(pair_dir: Path, reason: str, key: str | None) -> None:
        _fail_pair(out_dir, method, statuses, progress, pair_dir, reason, key)

    for start in range(0, len(pending), batch_size):
        batch, pairs, keys, features = [], [], [], []
        for pair_dir, key in pending[start : start + batch_size]:
            name = pair_name(pair_dir)
            try:
                pair = load_pair(pair_dir)
            except InputError as exc:
                fail(pair_dir, _unreadable_reason(pair_dir, exc), key)
                continue
            if pairs and not np.allclose(pair.spacing, pairs[0].spacing):
                # One batch shares one spacing (the mm field and the physical regulariser use it).
                fail(pair_dir, f"spacing {pair.spacing} mm differs from the batch's {pairs[0].spacing} mm", key)
                continue
            if encoder is not None:
                if name not in feature_files:
                    fail(pair_dir, f"no cached features in {features_manifest}", key)
                    continue
                try:
                    features.append(load_features(feature_files[name], identity))
                except CacheError as exc:  # unusable cache (truncated, stale): rebuild it with the loaded encoder
                    cache_fixed_features(spec, [pair_dir], [feature_files[name]], encoder=encoder)
                    try:
                        features.append(load_features(feature_files[name], identity))
                    except CacheError as again:
                        fail(pair_dir, f"{exc}; rebuilding failed: {again}", key)
                        continue
                    log.warning("%s; rebuilt", exc)
            batch.append(pair_dir)
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
        )
        for index, (pair_dir, pair, key) in enumerate(zip(batch, pairs, keys)):
            write_pair_result(
                out_dir / pair_name(pair_dir),
                result,
                index,
                patient=pair.patient,
                method=method.name,
                spacing=pair.spacing,
                moving_label=pair.moving_label,
                fingerprint=key,
                batch_sizing=batch_sizing,
            )
            statuses[pair_name(pair_dir)] = {"status": result.status[index], "reason": result.reason[index]}
            progress.update()
    progress.close()
    return _write_manifest(method, expected, statuses, manifest)


def _register_shard_elastix(method: Method, pair_dirs: Sequence[str | Path], out_dir: Path, manifest: str | Path, *,
                            threads: int) -> Path:
    """Register every pair of a shard with elastix, one pair at a time; write results and the manifest.

    elastix stopping with an error (e.g. too few samples inside the moving image)
    fails that pair with elastix's message; the others go on.
    """
    if threads < 1:
        raise FeatregError(f"threads must be at least 1, got {threads}")
    settings = ElastixSettings.from_dict(method.settings)
    expected = fingerprint(method, None)
    statuses: dict[str, dict[str, Any]] = {}
    pending = _pending_pairs(pair_dirs, out_dir, expected, statuses)
    log.info("method %s (elastix): %d pairs, %d already done, %d to register with %d thread(s)", method.name,
             len(statuses) + len(pending), len(statuses), len(pending), threads)
    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")
    for pair_dir, key in pending:
        name = pair_name(pair_dir)
        try:
            pair = load_pair(pair_dir)
        except InputError as exc:
            _fail_pair(out_dir, method, statuses, progress, pair_dir, _unreadable_reason(pair_dir, exc), key)
            continue
        try:
            result = register_elastix(pair.fixed, pair.moving, pair.spacing, settings, threads=threads)
        except RuntimeError as exc:  # itk raises its exceptions as RuntimeError
            _fail_pair(out_dir, method, statuses, progress, pair_dir, f"elastix failed: {_first_line(exc)}", key)
            continue
        if not np.isfinite(result.displacement_mm).all():
            _fail_pair(out_dir, method, statuses, progress, pair_dir, "elastix returned a non-finite displacement", key)
            continue
        write_elastix_result(out_dir / name, result, settings, patient=pair.patient, method=method.name,
                             spacing=pair.spacing, moving_label=pair.moving_label, threads=threads, fingerprint=key)
        statuses[name] = _ok()
        progress.update()
    progress.close()
    return _write_manifest(method, expected, statuses, manifest)


def _first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message (itk's are many lines long)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


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

    One row per pair (per slice of a patient with several). A pair or result that
    cannot be read gives that pair a ``failed`` row with the reason and NaN metrics;
    the other pairs are evaluated.
    """
    if (method is None) != (results_dir is None):
        raise FeatregError("give both a method and its results folder, or neither (the initial row)")
    rows = []
    pairs = expand_pairs(pair_dirs)
    labels = next((pair_labels(p) for p in pairs if (p / "pair.json").is_file()), LABELS)  # for unreadable pairs
    for pair_dir in pairs:
        result_dir = None if results_dir is None else Path(results_dir) / pair_name(pair_dir)
        try:
            row = evaluate_result(pair_dir, result_dir)
        except InputError as exc:
            reason = _unreadable_reason(pair_dir, exc)
            log.error("%s: %s", pair_name(pair_dir), reason)
            row = failed_row(pair_patient(pair_dir), reason, pair_slice(pair_dir), labels)
        rows.append(method_columns(method) | row)
    table = pd.DataFrame(rows).astype({"slice": "Int64"})
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return Path(out_csv)


def collect_metrics(shard_csvs: Sequence[str | Path], out_csv: str | Path) -> Path:
    """Concatenate shard metric tables into one ``metrics.csv``, sorted by method and patient."""
    if not shard_csvs:
        raise FeatregError("no metric tables to collect")
    table = pd.concat([pd.read_csv(p, keep_default_na=True) for p in shard_csvs], ignore_index=True)
    table = table.astype({"slice": "Int64"}).sort_values(["method", "patient", "slice"], kind="stable")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return Path(out_csv)


def select_tuned(spec: Mapping[str, Any], metrics: Any) -> dict[str, Any]:
    """Apply the selection rule of ``spec`` (:meth:`TuningPlan.selection_spec`) to validation metrics.

    ``metrics`` is the per-pair metrics table (a DataFrame) of the candidates.
    Returns the selection record: the rule, each candidate's means and
    eligibility (a finite metric and folding value on every validation pair, mean
    folding within the limit), the selected grid point and the tuned method (its settings,
    renamed ``<base>@tuned``). Raises InputError when a candidate has no rows or
    the constraint excludes every candidate.
    """
    rule = {**spec["rule"], "ties": TIE_BREAK}
    metric, folding = rule["metric"], rule["folding"]
    candidates = list(spec["candidates"])
    rows = metrics[metrics["method"].isin(candidates)]
    missing = [c for c in candidates if c not in set(rows["method"])]
    if missing:
        raise InputError(f"validation metrics lack grid point(s) of {spec['base']}: {', '.join(missing)}")
    choice = select_setting(rows, max_neg_jac_pct=rule["max_neg_jac_pct"], methods=candidates, dice=metric,
                            folding=folding)
    table = summarize(rows, [metric, folding, "sdlogj"]).set_index("method")
    eligible = eligible_settings(rows, max_neg_jac_pct=rule["max_neg_jac_pct"], dice=metric, folding=folding)
    listed = []
    for name in candidates:
        row = table.loc[name]
        listed.append({
            "method": name,
            "values": spec["candidates"][name]["values"],
            "n": int(row[f"n_{metric}"]),
            f"mean_{metric}": float(row[f"mean_{metric}"]),
            f"mean_{folding}": float(row[f"mean_{folding}"]),
            "mean_sdlogj": float(row["mean_sdlogj"]),
            "eligible": bool(eligible[name]),
        })
    chosen = Method(**spec["candidates"][choice]["method"])
    tuned = replace(chosen, name=spec["tuned"])
    return {
        "base": spec["base"],
        "tuned": spec["tuned"],
        "paper": spec["paper"],
        "rule": rule,
        "selected": choice,
        "values": spec["candidates"][choice]["values"],
        "method": json.loads(tuned.to_json()),
        "candidates": listed,
    }


def write_selection(
    spec: Mapping[str, Any], metric_tables: Sequence[str | Path], out: str | Path, method_file: str | Path
) -> Path:
    """The selection job: :func:`select_tuned` on the candidates' validation metric tables.

    Writes the tuned method to ``method_file`` (where every method's file lives) and then
    the selection record to ``out``.
    """
    metrics = patient_means(pd.concat([read_metrics(path) for path in metric_tables], ignore_index=True))
    record = select_tuned(spec, metrics)
    write_method_file(Method(**record["method"]), method_file)
    return write_json_atomic(out, record)

"""Shard jobs: what one workflow job does with a shard of pairs.

A shard is a list of preprocessed pairs (see ``featreg.experiment.shard_patients``).
Each job loads its encoder once, works through the shard in batches, writes one
result per patient and finally a manifest (the job's declared output) recording
each patient's status. A patient whose result already exists with the same
fingerprint is not redone, so a killed job resumes where it stopped, and one bad
pair fails alone: its reason goes to its ``run.json`` and the manifest.
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

from featreg.data.nifti import atomic_path
from featreg.errors import FeatregError, InputError
from featreg.experiment import Method

if TYPE_CHECKING:
    from featreg.encoders.registry import EncoderSpec

log = logging.getLogger(__name__)


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def fingerprint(method: Method, encoder_identity: dict[str, Any] | None) -> str:
    """A hash of everything that determines a method's result for a pair."""
    text = method.to_json() + json.dumps(encoder_identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _patient_of(pair_dir: Path) -> str:
    return Path(pair_dir).name


def _finished(result_dir: Path, expected: str) -> bool:
    run_file = result_dir / "run.json"
    if not run_file.is_file():
        return False
    try:
        run = json.loads(run_file.read_text())
    except json.JSONDecodeError:
        return False
    return run.get("status") == "ok" and run.get("fingerprint") == expected


def register_shard(
    method: Method,
    pair_dirs: Sequence[str | Path],
    out_dir: str | Path,
    manifest: str | Path,
    *,
    encoder_spec: EncoderSpec | None = None,
    features_manifest: str | Path | None = None,
    device: str = "auto",
    batch_size: int = 8,
) -> Path:
    """Register every pair of a shard with ``method``, batch by batch; write results and the manifest."""
    import torch

    from featreg.data.pairs import load_pair
    from featreg.registration.io import write_failed_result, write_pair_result
    from featreg.registration.optimize import register_pairs, resolve_device
    from featreg.registration.settings import RegistrationSettings

    if batch_size < 1:
        raise FeatregError(f"batch_size must be at least 1, got {batch_size}")
    if (method.encoder is None) != (encoder_spec is None):
        raise FeatregError(f"method {method.name} uses encoder {method.encoder} but the encoder spec given is {encoder_spec}")
    settings = RegistrationSettings.from_dict(method.registration_settings())
    torch_device = resolve_device(device)
    out_dir = Path(out_dir)

    encoder = None
    feature_files: dict[str, str] = {}
    identity = None
    if encoder_spec is not None:
        from featreg.encoders.registry import build_encoder

        spec = encoder_spec
        encoder = build_encoder(spec, device=str(torch_device))
        identity = encoder.identity()
        if features_manifest is None:
            raise FeatregError(f"method {method.name} uses encoder {spec.name} but no feature manifest was given")
        feature_files = json.loads(Path(features_manifest).read_text())["features"]
    expected = fingerprint(method, identity)

    statuses: dict[str, dict[str, Any]] = {}
    pending: list[Path] = []
    for pair_dir in map(Path, pair_dirs):
        patient = _patient_of(pair_dir)
        if _finished(out_dir / patient, expected):
            statuses[patient] = {"status": "ok", "reason": "", "resumed": True}
        else:
            pending.append(pair_dir)
    log.info("method %s: %d pairs, %d already done, %d to register on %s", method.name, len(pair_dirs), len(statuses), len(pending), torch_device)

    progress = tqdm(total=len(pending), desc=f"register {method.name}", unit="pair")
    for start in range(0, len(pending), batch_size):
        batch, pairs = [], []
        for pair_dir in pending[start : start + batch_size]:
            patient = _patient_of(pair_dir)
            try:
                pairs.append(load_pair(pair_dir))
                batch.append(patient)
            except InputError as exc:
                log.error("%s", exc)
                write_failed_result(out_dir / patient, patient=patient, method=method.name, reason=str(exc), fingerprint=expected)
                statuses[patient] = {"status": "failed", "reason": str(exc)}
                progress.update()
        if not pairs:
            continue
        fixed = np.stack([p.fixed for p in pairs])[:, None]
        moving = np.stack([p.moving for p in pairs])[:, None]
        fixed_features = None
        if encoder is not None:
            from featreg.encoders.cache import load_features

            fixed_features = torch.cat([load_features(feature_files[name], identity) for name in batch])
        result = register_pairs(
            fixed,
            moving,
            settings,
            spacing=pairs[0].spacing,
            encoder=encoder,
            fixed_features=fixed_features,
            device=torch_device,
            progress=False,
        )
        for index, (patient, pair) in enumerate(zip(batch, pairs)):
            write_pair_result(
                out_dir / patient,
                result,
                index,
                patient=patient,
                method=method.name,
                spacing=pair.spacing,
                moving_label=pair.moving_label,
                fingerprint=expected,
            )
            statuses[patient] = {"status": result.status[index], "reason": result.reason[index]}
            progress.update()
    progress.close()
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("method %s: %d failed pair(s): %s", method.name, len(failed), ", ".join(failed))
    return write_json(manifest, {"method": method.name, "fingerprint": expected, "patients": statuses})


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
    """Metrics of every pair of a shard, before registration (``method`` None) or after it."""
    from featreg.evaluation.evaluate import evaluate_result

    if (method is None) != (results_dir is None):
        raise FeatregError("give both a method and its results folder, or neither (the initial row)")
    rows = []
    for pair_dir in map(Path, pair_dirs):
        result_dir = None if results_dir is None else Path(results_dir) / _patient_of(pair_dir)
        rows.append(method_columns(method) | evaluate_result(pair_dir, result_dir))
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

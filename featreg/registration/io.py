"""Per-pair registration outputs on disk (docs/design.md, "A registration result on disk").

Every file is written atomically and ``run.json`` last, so its presence means
the folder is complete (written by :mod:`featreg.registration.run_record`). A failed pair
writes only ``run.json``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featreg.data.nifti import write_displacement, write_nifti
from featreg.io import atomic_path
from featreg.registration.elastix import ElastixResult, ElastixSettings
from featreg.registration.sampling import warp_labels
from featreg.registration.units import displacement_from_mm
from featreg.registration.optimize import LOSS_COLUMNS, RegistrationResult
from featreg.registration.run_record import write_run

logger = logging.getLogger(__name__)


def warp_label_mm(label: np.ndarray, displacement_mm: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Warp a ``(X, Y)`` label map by a ``(2, X, Y)`` field in mm: nearest neighbour, border replication, uint8."""
    label = np.asarray(label)
    if label.shape != displacement_mm.shape[1:]:
        raise ValueError(f"label shape {label.shape} does not match the field {displacement_mm.shape[1:]}")
    field = torch.from_numpy(displacement_from_mm(displacement_mm, spacing))[None]
    warped = warp_labels(torch.from_numpy(label.astype(np.uint8))[None, None], field)
    return warped[0, 0].numpy().astype(np.uint8)


def _write_fields(out_dir: Path, displacement_mm: np.ndarray, warped: np.ndarray, moving_label: np.ndarray | None,
                  spacing: tuple[float, ...]) -> None:
    """The field in mm, the warped image and the moving labels warped by nearest neighbour."""
    if moving_label is None:
        raise ValueError("moving_label is required to write a successful pair")
    write_displacement(out_dir / "displacement.nii.gz", displacement_mm, spacing)
    write_nifti(out_dir / "warped_image.nii.gz", warped.astype(np.float32), spacing)
    write_nifti(out_dir / "warped_label.nii.gz", warp_label_mm(moving_label, displacement_mm, spacing), spacing)


def write_pair_result(
    out_dir: str | Path,
    result: RegistrationResult,
    index: int,
    *,
    patient: str,
    method: str,
    spacing: Sequence[float],
    moving_label: np.ndarray | None,
    fingerprint: str | None = None,
    batch_sizing: dict[str, Any] | None = None,
) -> Path:
    """Write pair ``index`` of ``result`` into ``out_dir`` (``<results>/<method>/<patient>/``); returns ``run.json``.

    ``moving_label`` ``(X, Y)`` is warped by nearest neighbour; it is required for an ``ok`` pair.
    ``fingerprint`` (identifying method + encoder, for resuming) is stored in ``run.json`` when given,
    and so is ``batch_sizing``, how ``batch_size: auto`` chose the batch.
    """
    if not 0 <= index < result.batch:
        raise ValueError(f"index {index} out of range for a result of {result.batch} pair(s)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(s) for s in spacing)
    status = result.status[index]
    if status == "ok":
        _write_fields(out_dir, result.displacement_mm[index], result.warped[index, 0], moving_label, spacing)
        rows = result.loss[index, : int(result.evaluations[index])]
        with atomic_path(out_dir / "loss.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("iteration",) + LOSS_COLUMNS)
            for i, row in enumerate(rows, start=1):
                writer.writerow([i] + [repr(float(v)) for v in row])
    run = {
        "patient": patient,
        "method": method,
        "status": status,
        "reason": result.reason[index],
        "iterations": int(result.iterations[index]),
        # The pair's share of its batch's wall time: what one pair costs when batched.
        "seconds": float(result.seconds) / result.batch,
        "batch_seconds": float(result.seconds),
        "batch_size": result.batch,
        "peak_memory_mb": float(result.peak_memory_mb),
        "device": result.device,
        "settings": result.settings.to_dict(),
    }
    if fingerprint is not None:
        run["fingerprint"] = fingerprint
    if batch_sizing is not None:
        run["batch_sizing"] = batch_sizing
    path = write_run(out_dir, run)
    logger.info("wrote %s (%s)", out_dir, status)
    return path


def write_elastix_result(out_dir: str | Path, result: ElastixResult, settings: ElastixSettings, *, patient: str,
                         method: str, spacing: Sequence[float], moving_label: np.ndarray, threads: int,
                         fingerprint: str | None = None) -> Path:
    """Write one elastix registration into ``out_dir`` as any method's result; returns ``run.json``.

    The same files as an FFD pair but ``loss.csv`` (elastix's optimiser trace has other
    terms): the field in mm, elastix's result image, the labels warped by featreg's
    nearest-neighbour sampler. ``run.json`` adds the parameter maps elastix ran and its version.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(s) for s in spacing)
    _write_fields(out_dir, result.displacement_mm, result.warped, moving_label, spacing)
    run = {
        "patient": patient,
        "method": method,
        "status": "ok",
        "reason": "",
        "iterations": settings.total_iterations,
        "seconds": result.seconds,
        "batch_seconds": result.seconds,
        "batch_size": 1,
        "peak_memory_mb": result.peak_memory_mb,
        "device": "cpu",
        "threads": threads,
        "engine": result.engine,
        "settings": settings.to_dict(),
        "parameter_maps": result.parameter_maps,
    }
    if fingerprint is not None:
        run["fingerprint"] = fingerprint
    path = write_run(out_dir, run)
    logger.info("wrote %s (ok)", out_dir)
    return path


def write_failed_result(out_dir: str | Path, *, patient: str, method: str, reason: str,
                        fingerprint: str | None = None) -> Path:
    """``run.json`` alone, status failed, for a pair that never reached the optimiser (e.g. unreadable input)."""
    run = {"patient": patient, "method": method, "status": "failed", "reason": reason, "iterations": 0,
           "seconds": 0.0, "peak_memory_mb": 0.0, "device": "", "settings": {}}
    if fingerprint is not None:
        run["fingerprint"] = fingerprint
    path = write_run(out_dir, run)
    logger.info("wrote %s (failed: %s)", path.parent, reason)
    return path

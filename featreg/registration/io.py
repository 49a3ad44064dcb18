"""Per-pair registration outputs on disk (docs/design.md, "A registration result on disk").

Every file is written atomically and ``run.json`` last, so its presence means
the folder is complete. A failed pair writes only ``run.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from featreg.data.nifti import atomic_path, read_nifti, write_nifti
from featreg.errors import InputError
from featreg.registration.bspline import displacement_from_mm, warp_labels
from featreg.registration.optimize import LOSS_COLUMNS, RegistrationResult

logger = logging.getLogger(__name__)

FILES = ("displacement.nii.gz", "warped_image.nii.gz", "warped_label.nii.gz", "loss.csv", "run.json")


def warp_label_mm(label: np.ndarray, displacement_mm: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Warp a ``(X, Y)`` label map by a ``(2, X, Y)`` field in mm: nearest neighbour, border replication, uint8."""
    label = np.asarray(label)
    if label.shape != displacement_mm.shape[1:]:
        raise ValueError(f"label shape {label.shape} does not match the field {displacement_mm.shape[1:]}")
    field = torch.from_numpy(displacement_from_mm(displacement_mm, spacing))[None]
    warped = warp_labels(torch.from_numpy(label.astype(np.uint8))[None, None], field)
    return warped[0, 0].numpy().astype(np.uint8)


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


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
) -> Path:
    """Write pair ``index`` of ``result`` into ``out_dir`` (``<results>/<method>/<patient>/``); returns ``run.json``.

    ``moving_label`` ``(X, Y)`` is warped by nearest neighbour; it is required for an ``ok`` pair.
    ``fingerprint`` (identifying method + encoder, for resuming) is stored in ``run.json`` when given.
    """
    if not 0 <= index < result.batch:
        raise ValueError(f"index {index} out of range for a result of {result.batch} pair(s)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(s) for s in spacing)
    status = result.status[index]
    if status == "ok":
        if moving_label is None:
            raise ValueError("moving_label is required to write a successful pair")
        field = result.displacement_mm[index]
        # (2, X, Y) -> (X, Y, 1, 1, 2): NIfTI vector layout, components last.
        write_nifti(out_dir / "displacement.nii.gz", np.moveaxis(field, 0, -1)[:, :, None, None, :].astype(np.float32),
                    spacing, intent="vector")
        write_nifti(out_dir / "warped_image.nii.gz", result.warped[index, 0].astype(np.float32), spacing)
        write_nifti(out_dir / "warped_label.nii.gz", warp_label_mm(moving_label, field, spacing), spacing)
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
        "seconds": float(result.seconds),
        "peak_memory_mb": float(result.peak_memory_mb),
        "device": result.device,
        "settings": result.settings.to_dict(),
    }
    if fingerprint is not None:
        run["fingerprint"] = fingerprint
    path = out_dir / "run.json"
    _write_text(path, json.dumps(run, indent=2) + "\n")
    logger.info("wrote %s (%s)", out_dir, status)
    return path


def write_failed_result(out_dir: str | Path, *, patient: str, method: str, reason: str,
                        fingerprint: str | None = None) -> Path:
    """``run.json`` alone, status failed, for a pair that never reached the optimiser (e.g. unreadable input)."""
    run = {"patient": patient, "method": method, "status": "failed", "reason": reason, "iterations": 0,
           "seconds": 0.0, "peak_memory_mb": 0.0, "device": "", "settings": {}}
    if fingerprint is not None:
        run["fingerprint"] = fingerprint
    path = Path(out_dir) / "run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(run, indent=2) + "\n")
    logger.info("wrote %s (failed: %s)", path.parent, reason)
    return path


def read_displacement(path: str | Path, *, patient: str | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Read ``displacement.nii.gz`` back as ``((2, X, Y) float32 in mm, spacing (sx, sy) in mm)``."""
    data, spacing = read_nifti(path, patient=patient)
    if data.ndim != 5 or data.shape[2:] != (1, 1, 2):
        raise InputError(f"expected a displacement of shape (X, Y, 1, 1, 2), got {data.shape}", path=path, patient=patient)
    field = np.moveaxis(data[:, :, 0, 0, :], -1, 0).astype(np.float32)
    # pixdim is float32 on disk: round so that 1.8 reads back as 1.8.
    return field, (round(float(spacing[0]), 6), round(float(spacing[1]), 6))

"""One metrics row from a preprocessed pair and a registration result on disk.

Files follow docs/design.md ("A preprocessed pair on disk", "A registration
result on disk"). A row holds :func:`~featreg.evaluation.metrics_table.row_columns`;
the evaluate job adds the method's descriptor columns
(:mod:`featreg.evaluation.metrics_table`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from featreg.data import LABELS
from featreg.data.nifti import SPACING_DECIMALS, read_displacement, read_nifti
from featreg.data.pairs import pair_labels, pair_patient, pair_slice
from featreg.errors import InputError
from featreg.evaluation.metrics import evaluate_arrays
from featreg.evaluation.metrics_table import RUN_COLUMNS, row_columns
from featreg.registration.run_record import read_run, run_number

logger = logging.getLogger(__name__)

SPACING_TOLERANCE_MM = 1e-4


def _read(path: Path, patient: str) -> tuple[np.ndarray, tuple[float, ...]]:
    data, spacing = read_nifti(path, patient=patient)
    return data, tuple(round(s, SPACING_DECIMALS) for s in spacing)


def _read_label(path: Path, patient: str, labels: Mapping[int, str]) -> tuple[np.ndarray, tuple[float, ...]]:
    data, spacing = _read(path, patient)
    if data.ndim != 2:
        raise InputError(f"expected a 2D label map (X, Y), got shape {data.shape}", path=path, patient=patient)
    values = np.unique(data)
    if not np.isin(values, [0, *labels]).all():
        raise InputError(
            f"label values must be in {[0, *labels]}, found {values[~np.isin(values, [0, *labels])].tolist()}",
            path=path,
            patient=patient,
        )
    return data.astype(np.uint8), spacing


def _check_spacing(path: Path, patient: str, spacing: tuple[float, ...], expected: tuple[float, ...]) -> None:
    if not np.allclose(spacing, expected, rtol=0, atol=SPACING_TOLERANCE_MM):
        raise InputError(f"spacing {spacing} mm differs from the fixed label's {expected} mm", path=path, patient=patient)


def failed_row(
    patient: str, reason: str, slice_index: int | None = None, labels: Mapping[int, str] = LABELS
) -> dict[str, Any]:
    """The row of a pair that has no result: NaN metrics, status ``failed`` and its reason."""
    return {column: float("nan") for column in row_columns(labels)} | {
        "patient": patient,
        "slice": float("nan") if slice_index is None else slice_index,
        "status": "failed",
        "reason": reason,
        "hd95_empty": "",
    }


def evaluate_result(pair_dir: str | Path, result_dir: str | Path | None = None) -> dict[str, Any]:
    """The metrics row of one registration result, or of the unregistered pair.

    ``pair_dir`` is ``<pairs>/<patient>/`` or ``<pairs>/<patient>/slice<NN>/``. With
    ``result_dir`` the prediction is its ``warped_label.nii.gz`` and the field
    its ``displacement.nii.gz``; seconds, peak memory and iterations come from
    its ``run.json``. A run whose status is ``failed`` gives a row with NaN
    metrics, status ``failed`` and the run's reason. Without ``result_dir``
    (method ``initial``) the prediction is the moving label, the field zero,
    and the run columns NaN. Missing or malformed files raise InputError.
    """
    pair_dir = Path(pair_dir)
    patient, slice_index, labels = pair_patient(pair_dir), pair_slice(pair_dir), pair_labels(pair_dir)
    run: dict[str, Any] = {}
    if result_dir is not None:
        result_dir = Path(result_dir)
        run = read_run(result_dir, patient=patient)
        if run["status"] == "failed":
            logger.info("%s: run failed (%s), metrics are NaN", patient, run.get("reason", ""))
            row = failed_row(patient, str(run.get("reason") or ""), slice_index, labels)
            row.update({key: run_number(run, key) for key in RUN_COLUMNS})
            return row

    fixed_path = pair_dir / "fixed_label.nii.gz"
    fixed_label, spacing = _read_label(fixed_path, patient, labels)
    if result_dir is None:
        warped_path = pair_dir / "moving_label.nii.gz"
        displacement = np.zeros((2, *fixed_label.shape))
    else:
        warped_path = result_dir / "warped_label.nii.gz"
        displacement_path = result_dir / "displacement.nii.gz"
        displacement, field_spacing = read_displacement(displacement_path, patient=patient, shape=fixed_label.shape)
        _check_spacing(displacement_path, patient, field_spacing, spacing)
    warped_label, warped_spacing = _read_label(warped_path, patient, labels)
    if warped_label.shape != fixed_label.shape:
        raise InputError(
            f"shape {warped_label.shape} differs from the fixed label's {fixed_label.shape}", path=warped_path, patient=patient
        )
    _check_spacing(warped_path, patient, warped_spacing, spacing)

    row: dict[str, Any] = {"patient": patient, "slice": slice_index, "status": "ok", "reason": ""}
    row.update(evaluate_arrays(fixed_label, warped_label, displacement, spacing, labels))
    row.update({key: run_number(run, key) for key in RUN_COLUMNS})
    logger.info("%s: dice_mean %.3f, hd95_mean %.2f mm", patient, row["dice_mean"], row["hd95_mean"])
    return row

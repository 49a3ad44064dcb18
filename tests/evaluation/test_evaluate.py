"""Metrics rows from a preprocessed pair and a registration result written to disk."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


from featreg.data.nifti import write_nifti
from featreg.errors import InputError
from featreg.evaluation.evaluate import evaluate_result
from featreg.evaluation.metrics_table import ROW_COLUMNS

SPACING = (1.8, 1.8)


def labels_with_lv_at(row: int) -> np.ndarray:
    labels = np.zeros((32, 32), np.uint8)
    labels[row : row + 6, 10:20] = 2
    labels[row + 2 : row + 4, 12:18] = 3
    labels[row : row + 6, 4:8] = 1
    return labels


@pytest.fixture
def pair_dir(tmp_path):
    pair = tmp_path / "pairs" / "patient007"
    write_nifti(pair / "fixed_label.nii.gz", labels_with_lv_at(10), SPACING)
    write_nifti(pair / "moving_label.nii.gz", labels_with_lv_at(13), SPACING)
    return pair


def write_result(result, warped, displacement, run, spacing=SPACING):
    write_nifti(result / "warped_label.nii.gz", warped, spacing)
    field = np.moveaxis(displacement, 0, -1)[:, :, None, None, :].astype(np.float32)
    write_nifti(result / "displacement.nii.gz", field, spacing, intent="vector")
    (result / "run.json").write_text(json.dumps(run))


RUN_OK = {
    "patient": "patient007",
    "method": "baseline",
    "status": "ok",
    "reason": "",
    "iterations": 50,
    "seconds": 1.25,
    "peak_memory_mb": 321.0,
    "device": "cpu",
    "settings": {},
}


def test_initial_row_uses_moving_label_and_zero_field(pair_dir):
    row = evaluate_result(pair_dir)
    assert list(row) == list(ROW_COLUMNS)
    assert row["patient"] == "patient007" and row["status"] == "ok" and row["reason"] == ""
    # moving = fixed shifted 3 rows (5.4 mm): LV rows 12-13 vs 15-16 do not overlap.
    assert row["dice_LV"] == 0.0
    assert row["dice_RV"] == pytest.approx(2 * 3 * 4 / 48)
    assert row["hd95_LV"] == 3 * 1.8  # pixdim 1.8 (float32) is read back as 1.8
    assert row["sdlogj"] == 0.0 and row["neg_jac_pct"] == 0.0
    assert all(math.isnan(row[key]) for key in ("seconds", "peak_memory_mb", "iterations"))


def test_registered_row_reads_field_warped_labels_and_run(pair_dir, tmp_path):
    result = tmp_path / "results" / "baseline" / "patient007"
    result.mkdir(parents=True)
    fixed = labels_with_lv_at(10)
    # A field that stretches axis 0 by 10 % (J = 1.1 everywhere) and a perfect warp.
    x0 = np.arange(32) * SPACING[0]
    displacement = np.zeros((2, 32, 32))
    displacement[0] = 0.1 * x0[:, None]
    write_result(result, fixed, displacement, RUN_OK)
    row = evaluate_result(pair_dir, result)
    assert row["status"] == "ok"
    assert row["dice_mean"] == 1.0 and row["hd95_mean"] == 0.0 and row["hd95_empty"] == ""
    assert row["sdlogj"] == pytest.approx(0.0, abs=1e-6)
    assert row["neg_jac_pct"] == 0.0
    assert (row["seconds"], row["peak_memory_mb"], row["iterations"]) == (1.25, 321.0, 50.0)


def test_failed_run_gives_nan_row_with_reason(pair_dir, tmp_path):
    result = tmp_path / "results" / "feature" / "patient007"
    result.mkdir(parents=True)
    (result / "run.json").write_text(
        json.dumps({"patient": "patient007", "status": "failed", "reason": "loss became NaN at iteration 12", "seconds": 3.5})
    )
    row = evaluate_result(pair_dir, result)
    assert list(row) == list(ROW_COLUMNS)
    assert row["status"] == "failed" and row["reason"] == "loss became NaN at iteration 12"
    assert math.isnan(row["dice_mean"]) and math.isnan(row["hd95_LV"]) and math.isnan(row["sdlogj_heart"])
    assert row["seconds"] == 3.5 and math.isnan(row["iterations"])


def test_missing_files_raise_input_error_naming_the_file(pair_dir, tmp_path):
    result = tmp_path / "results" / "baseline" / "patient007"
    result.mkdir(parents=True)
    with pytest.raises(InputError, match=r"patient patient007, file .*run\.json: file is missing"):
        evaluate_result(pair_dir, result)
    (result / "run.json").write_text(json.dumps(RUN_OK))
    with pytest.raises(InputError, match=r"displacement\.nii\.gz: file is missing"):
        evaluate_result(pair_dir, result)
    (pair_dir / "moving_label.nii.gz").unlink()
    with pytest.raises(InputError, match=r"moving_label\.nii\.gz: file is missing"):
        evaluate_result(pair_dir)


def test_malformed_inputs_raise_input_error(pair_dir, tmp_path):
    result = tmp_path / "results" / "baseline" / "patient007"
    result.mkdir(parents=True)
    fixed = labels_with_lv_at(10)
    write_result(result, fixed, np.zeros((2, 32, 32)), {**RUN_OK, "status": "done"})
    with pytest.raises(InputError, match='"status" "ok" or "failed"'):
        evaluate_result(pair_dir, result)
    (result / "run.json").write_text(json.dumps({**RUN_OK, "patient": "patient008"}))
    with pytest.raises(InputError, match="run is for patient 'patient008', not 'patient007'"):
        evaluate_result(pair_dir, result)
    write_result(result, fixed, np.zeros((2, 32, 32)), RUN_OK, spacing=(1.0, 1.0))
    with pytest.raises(InputError, match=r"spacing \(1\.0, 1\.0\) mm differs from the fixed label's \(1\.8, 1\.8\) mm"):
        evaluate_result(pair_dir, result)
    write_result(result, np.full((32, 32), 5, np.uint8), np.zeros((2, 32, 32)), RUN_OK)
    with pytest.raises(InputError, match=r"warped_label\.nii\.gz: label values must be in \[0, 1, 2, 3\], found \[5\]"):
        evaluate_result(pair_dir, result)

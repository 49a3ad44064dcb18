"""Per-pair outputs: the files of docs/design.md, run.json last, failed pairs, reading the field back."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from featreg.data.nifti import read_displacement
from featreg.errors import InputError
from featreg.registration.optimize import register_pairs
from featreg.registration.settings import RegistrationSettings
from featreg.registration.io import (
    warp_label_mm,
    write_failed_result,
    write_pair_result,
)


@pytest.fixture(scope="module")
def result():
    fixed = torch.rand(2, 1, 24, 20, generator=torch.Generator().manual_seed(0))
    moving = torch.roll(fixed, 1, dims=-1)
    res = register_pairs(fixed, moving, RegistrationSettings(lattice=(5, 5), lr=5e-3, iterations=6),
                         spacing=(1.8, 1.5), device="cpu", progress_every_s=None)
    res.status[1], res.reason[1] = "failed", "loss became NaN at iteration 3"
    return res


def test_ok_pair_writes_every_file(tmp_path, result):
    label = np.zeros((24, 20), np.uint8)
    label[5:15, 4:12] = 3
    out = tmp_path / "baseline" / "patient001"
    write_pair_result(out, result, 0, patient="patient001", method="baseline", spacing=(1.8, 1.5), moving_label=label)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["displacement.nii.gz", "warped_image.nii.gz", "warped_label.nii.gz", "loss.csv", "run.json"])
    field, spacing = read_displacement(out / "displacement.nii.gz")
    assert spacing == (1.8, 1.5)
    np.testing.assert_array_equal(field, result.displacement_mm[0])
    header = nib.load(out / "displacement.nii.gz").header
    assert header.get_intent()[0] == "vector" and header.get_data_shape() == (24, 20, 1, 1, 2)
    warped_label = np.asarray(nib.load(out / "warped_label.nii.gz").dataobj)
    assert warped_label.dtype == np.uint8 and set(np.unique(warped_label)) <= {0, 3}
    rows = list(csv.reader((out / "loss.csv").read_text().splitlines()))
    assert rows[0] == ["iteration", "total", "image", "feature", "regulariser"] and len(rows) == 1 + 6
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "ok" and run["iterations"] == 6 and run["settings"]["lattice"] == [5, 5]
    assert "pca_kept_variance" not in run
    assert not list(out.glob(".*part*"))  # no temporary files left behind


def test_run_json_records_the_pca_kept_variance(tmp_path):
    fixed = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    moving = torch.roll(fixed, 1, dims=-1)
    features = lambda x: torch.cat([x, x**2, x.sqrt()], dim=1)  # noqa: E731
    settings = RegistrationSettings(lattice=(4, 4), iterations=2, alpha=1.0, feature_distance="l1", encode="once", pca=2)
    res = register_pairs(fixed, moving, settings, fixed_features=features(fixed), moving_features=features(moving), device="cpu",
                         progress_every_s=None)
    out = tmp_path / "pca"
    write_pair_result(out, res, 1, patient="p", method="m", spacing=(1.8, 1.8), moving_label=np.zeros((16, 16), np.uint8))
    run = json.loads((out / "run.json").read_text())
    assert run["pca_kept_variance"] == float(res.pca_kept[1]) and 0.9 < run["pca_kept_variance"] < 1
    assert (run["settings"]["encode"], run["settings"]["pca"]) == ("once", 2)


def test_failed_pair_writes_only_run_json(tmp_path, result):
    out = tmp_path / "failed"
    write_pair_result(out, result, 1, patient="patient002", method="m", spacing=(1.8, 1.5), moving_label=None)
    assert [p.name for p in out.iterdir()] == ["run.json"]
    run = json.loads((out / "run.json").read_text())
    assert (run["status"], run["reason"]) == ("failed", "loss became NaN at iteration 3")


def test_unreadable_pair_writes_a_failed_run_json_with_fingerprint(tmp_path):
    path = write_failed_result(tmp_path / "p3", patient="p3", method="m", reason="file is missing", fingerprint="abc")
    run = json.loads(path.read_text())
    assert (run["status"], run["reason"], run["fingerprint"]) == ("failed", "file is missing", "abc")


def test_label_warp_is_nearest_neighbour_in_mm():
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    field = np.zeros((2, 3, 4), np.float32)
    field[1] = 2.0 * 1.6  # 1.6 px along axis 1 at 2 mm spacing -> rounds to 2 px
    warped = warp_label_mm(label, field, (1.0, 2.0))
    np.testing.assert_array_equal(warped, label[:, [2, 3, 3, 3]])


def test_read_displacement_rejects_a_plain_image(tmp_path):
    from featreg.data.nifti import write_nifti

    path = write_nifti(tmp_path / "image.nii.gz", np.zeros((4, 4), np.float32), (1.0, 1.0))
    with pytest.raises(InputError, match=r"expected a displacement of shape \(X, Y, 1, 1, 2\), got \(4, 4\)"):
        read_displacement(path)


def test_read_displacement_checks_the_expected_shape_and_finiteness(tmp_path):
    from featreg.data.nifti import write_nifti

    field = np.zeros((4, 3, 1, 1, 2), np.float32)
    path = write_nifti(tmp_path / "displacement.nii.gz", field, (1.8, 1.8), intent="vector")
    assert read_displacement(path, shape=(4, 3))[0].shape == (2, 4, 3)
    with pytest.raises(InputError, match=r"expected a displacement of shape \(4, 4, 1, 1, 2\), got \(4, 3, 1, 1, 2\)"):
        read_displacement(path, shape=(4, 4))
    field[1, 2, 0, 0, 1] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", field, (1.8, 1.8), intent="vector")
    with pytest.raises(InputError, match="nan.nii.gz: displacement has non-finite values"):
        read_displacement(path, patient="patient001")

"""ACDC reader: layouts, Info.cfg, header quirks, patient selection, bad input."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from acdc_builders import box_volume, make_root, write_acdc_patient

from featreg.data.acdc import (
    list_patients,
    parse_info_cfg,
    patient_id,
    read_patient,
    select_patients,
)
from featreg.errors import InputError


def test_parse_info_cfg_types(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("ED: 1\nES: 12\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    assert parse_info_cfg(path) == {"ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0}


def test_parse_info_cfg_missing_key(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("ED: 1\nGroup: DCM\n")
    with pytest.raises(InputError, match="Info.cfg lacks ES"):
        parse_info_cfg(path, patient="patient007")


@pytest.mark.parametrize("database", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_read_patient_layouts_and_quirks(tmp_path, database, dtype):
    image, label = box_volume()
    image = (image * (10 if dtype is np.int16 else 1)).astype(dtype)
    write_acdc_patient(tmp_path, "patient003", ed_image=image, ed_label=label, es=9, subset="training",
                       database=database, spacing=(1.37, 1.37, 6.5))  # fmt: skip
    write_acdc_patient(tmp_path, "patient101", ed_image=image, ed_label=label, database=database)
    folder = tmp_path / ("database" if database else "") / "training" / "patient003"
    header = nib.load(folder / "patient003_frame01.nii.gz").header
    # The quirks we must survive: the affine claims 1 mm, only pixdim is right, slope is NaN.
    assert np.allclose(nib.load(folder / "patient003_frame01.nii.gz").affine, np.diag([-1, -1, 1, 1]))
    assert header["sform_code"] == 2 and header["qform_code"] == 0 and np.isnan(header["scl_slope"])

    assert list_patients(tmp_path) == ["patient003", "patient101"]
    patient = read_patient(tmp_path, "patient003")
    assert patient.spacing == pytest.approx((1.37, 1.37, 6.5))
    assert (patient.ed_frame, patient.es_frame, patient.group) == (1, 9, "NOR")
    assert patient.ed_image.dtype == dtype
    np.testing.assert_array_equal(patient.ed_image, image)
    np.testing.assert_array_equal(patient.es_label, label)
    assert patient.ed_label.dtype == np.uint8
    assert patient.files["es_image"].name == "patient003_frame09.nii.gz"


def test_patient_ids():
    assert patient_id(7) == "patient007" and patient_id(1000) == "patient1000"


def test_select_patients():
    available = [patient_id(n) for n in (1, 2, 100, 101, 120, 121, 150)]
    assert select_patients(available, "test") == ["patient121", "patient150"]
    assert select_patients(available, "val") == ["patient101", "patient120"]
    assert select_patients(available, "train") == ["patient001", "patient002", "patient100"]
    assert select_patients(available, "all") == available
    assert select_patients(available, [121, "patient002"]) == ["patient121", "patient002"]
    with pytest.raises(InputError, match="requested patient\\(s\\) not found: patient130"):
        select_patients(available, [121, 130])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        select_patients(available, "dev")


def test_no_layout(tmp_path):
    with pytest.raises(InputError, match="no ACDC layout found"):
        list_patients(tmp_path)


def _label_with(value):
    label = box_volume()[1].copy()
    label[0, 0, 0] = value
    return label


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda f: (f / "Info.cfg").unlink(), "Info.cfg", "Info.cfg is missing"),
        (lambda f: (f / "patient121_frame12.nii.gz").unlink(), "patient121_frame12.nii.gz", "file is missing"),
        (lambda f: (f / "patient121_frame01_gt.nii.gz").unlink(), "patient121_frame01_gt.nii.gz", "file is missing"),
        (
            lambda f: (f / "patient121_frame01.nii.gz").write_bytes((f / "patient121_frame01.nii.gz").read_bytes()[:300]),
            "patient121_frame01.nii.gz",
            "unreadable or truncated NIfTI",
        ),
        (
            lambda f: (f / "patient121_frame12.nii.gz").write_bytes(gzip.compress(b"not a nifti at all")),
            "patient121_frame12.nii.gz",
            "unreadable or truncated NIfTI",
        ),
    ],
)
def test_bad_files(tmp_path, damage, file, message):
    make_root(tmp_path)
    folder = tmp_path / "database" / "testing" / "patient121"
    damage(folder)
    with pytest.raises(InputError, match=message) as info:
        read_patient(tmp_path, "patient121")
    assert "patient patient121" in str(info.value) and file in str(info.value)


def test_bad_label_values(tmp_path):
    image, _ = box_volume()
    write_acdc_patient(tmp_path, "patient121", ed_image=image, ed_label=_label_with(5))
    with pytest.raises(InputError, match=r"patient121_frame01_gt.nii.gz: label values outside \{0, 1, 2, 3\}: \[5\]"):
        read_patient(tmp_path, "patient121")


def test_shape_mismatch(tmp_path):
    image, label = box_volume()
    write_acdc_patient(tmp_path, "patient121", ed_image=image, ed_label=label[:, :-1])
    with pytest.raises(InputError, match=r"frame01.nii.gz: image shape \(60, 50, 5\) differs from label shape \(60, 49, 5\)"):
        read_patient(tmp_path, "patient121")


def test_nan_intensities(tmp_path):
    image, label = box_volume()
    bad = image.copy()
    bad[3, 3, 3] = np.nan
    write_acdc_patient(tmp_path, "patient121", ed_image=image, es_image=bad, ed_label=label)
    with pytest.raises(InputError, match="patient121_frame12.nii.gz: image holds NaN or infinite intensities"):
        read_patient(tmp_path, "patient121")


def test_missing_patient_folder(tmp_path):
    make_root(tmp_path)
    with pytest.raises(InputError, match="patient patient007, file .*: patient folder not found"):
        read_patient(tmp_path, "patient007")

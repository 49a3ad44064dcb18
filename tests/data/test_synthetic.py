"""Synthetic cohort: ACDC layout and quirks, determinism, independence of N, realism (what makes cine MRI hard)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from featreg.cli import main
from featreg.data.acdc import AcdcPatient, list_patients, parse_info_cfg, read_patient
from featreg.data.preprocess import preprocess_patient
from featreg.data.synthetic import (
    ANNOTATION_JITTER_MM,
    GROUPS,
    SyntheticPatient,
    _annotate,
    synth_patient,
    write_cohort,
    write_patient,
)
from featreg.evaluation.metrics import dice_per_class

N_REALISM = 20  # four patients per group


@pytest.fixture(scope="module")
def cohort():
    return [synth_patient(0, k) for k in range(1, N_REALISM + 1)]


def _volume_ml(label, value, spacing):
    return (label == value).sum() * np.prod(spacing) / 1000.0


def _pair(p):
    patient = AcdcPatient(
        patient=p.patient, group=str(p.info["Group"]), ed_frame=1, es_frame=int(p.info["ES"]),
        ed_image=p.ed_image, ed_label=p.ed_label, es_image=p.es_image, es_label=p.es_label, spacing=p.spacing,
    )  # fmt: skip
    return preprocess_patient(patient)


def _basal_lv_slice(label):
    """Index of the most basal slice holding LV (slice 0 is the base)."""
    return int(np.nonzero((label == 3).any(axis=(0, 1)))[0][0])


def test_layout_header_quirks_and_cli(tmp_path):
    assert main(["synth", "--out", str(tmp_path), "--patients", "2", "--seed", "3", "--start", "100"]) == 0
    assert list_patients(tmp_path) == ["patient100", "patient101"]
    folder = tmp_path / "database" / "training" / "patient100"
    assert (tmp_path / "database" / "testing" / "patient101").is_dir()
    info = parse_info_cfg(folder / "Info.cfg")
    assert set(info) == {"ED", "ES", "Group", "Height", "Weight", "NbFrame"} and info["Group"] == "RV"  # (100 - 1) % 5 -> GROUPS[4]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["Info.cfg"] + [f"patient100_frame{f:02d}{s}.nii.gz" for f in (info["ED"], info["ES"]) for s in ("", "_gt")]
    )
    image = nib.load(folder / f"patient100_frame{info['ES']:02d}.nii.gz")
    expected = synth_patient(3, 100)
    assert image.header["sform_code"] == 2 and image.header["qform_code"] == 0
    assert np.isnan(image.header["scl_slope"])
    np.testing.assert_array_equal(image.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # says 1 mm ...
    assert image.header.get_zooms() == pytest.approx(expected.spacing)  # ... pixdim has the truth
    patient = read_patient(tmp_path, "patient100")
    np.testing.assert_array_equal(patient.es_image, expected.es_image)
    np.testing.assert_array_equal(patient.ed_label, expected.ed_label)


def test_byte_identical_and_independent_of_cohort_size(tmp_path):
    write_cohort(tmp_path / "a", 2, seed=5, progress=False)
    write_cohort(tmp_path / "b", 3, seed=5, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 10
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = synth_patient(6, 2)
    assert not np.array_equal(other.ed_label, read_patient(tmp_path / "a", "patient002").ed_label)


def test_4d_file(tmp_path):
    rng = np.random.default_rng(0)
    ed, es = (rng.uniform(0, 255, (6, 5, 3)).astype(np.float32) for _ in range(2))
    labels = np.zeros((6, 5, 3), np.uint8)
    info = {"ED": 1, "ES": 4, "Group": "NOR", "Height": 170.0, "NbFrame": 7, "Weight": 70.0}
    patient = SyntheticPatient("patient004", info, ed, labels, es, labels, (1.5, 1.5, 10.0))
    folder = write_patient(tmp_path, patient, with_4d=True)
    movie = nib.load(folder / "patient004_4d.nii.gz")
    assert movie.shape == (6, 5, 3, 7) and movie.header.get_zooms() == (1.5, 1.5, 10.0, 1.0)
    data = np.asarray(movie.dataobj)
    np.testing.assert_array_equal(data[..., 0], ed)
    np.testing.assert_array_equal(data[..., 3], es)
    np.testing.assert_allclose(data[..., 1], ed + (es - ed) * 0.25, rtol=1e-5)  # cosine blend: (1 - cos(pi / 3)) / 2
    np.testing.assert_allclose(data[..., 5], ed + (es - ed) * 0.5, rtol=1e-5)  # back toward ED after ES


def test_dtypes_and_geometry(cohort):
    dtypes = {p.ed_image.dtype for p in cohort}
    assert dtypes == {np.dtype(np.float32), np.dtype(np.int16), np.dtype(np.uint8)}
    for p in cohort:
        top = float(p.ed_image.max())
        if p.ed_image.dtype == np.int16:
            assert 398 * 0.9 <= top <= 4031
        else:
            assert 200 <= top <= 255 and p.ed_image.min() >= 0
        assert 6 <= p.ed_image.shape[2] <= 12 and all(150 <= n <= 256 for n in p.ed_image.shape[:2])
        assert 1.2 <= p.spacing[0] == p.spacing[1] <= 1.9 and 5 <= p.spacing[2] <= 10
        assert p.info["ED"] == 1 and 6 <= p.info["ES"] <= 16 < p.info["NbFrame"] + 1


# Ranges hold the drawn EF (group median + N(0, 0.04-0.05)) and hand contouring's ±0.02 on label volumes.
@pytest.mark.parametrize(
    ("group", "lvef", "rvef"),
    [("NOR", (0.50, 0.75), (0.40, 0.70)), ("DCM", (0.05, 0.30), (0.20, 0.55)), ("HCM", (0.60, 0.85), (0.40, 0.75)),
     ("MINF", (0.20, 0.45), (0.30, 0.60)), ("RV", (0.40, 0.70), (0.20, 0.50))],
)  # fmt: skip
def test_ejection_fractions_per_group(cohort, group, lvef, rvef):
    patients = [p for p in cohort if p.info["Group"] == group]
    assert len(patients) == N_REALISM // len(GROUPS)
    for p in patients:
        lv = 1 - _volume_ml(p.es_label, 3, p.spacing) / _volume_ml(p.ed_label, 3, p.spacing)
        rv = 1 - _volume_ml(p.es_label, 1, p.spacing) / _volume_ml(p.ed_label, 1, p.spacing)
        assert lvef[0] <= lv <= lvef[1], (p.patient, lv)
        assert rvef[0] <= rv <= rvef[1], (p.patient, rv)
        myo = _volume_ml(p.es_label, 2, p.spacing) / _volume_ml(p.ed_label, 2, p.spacing)
        assert 0.85 <= myo <= 1.15, (p.patient, myo)  # mass-conserving wall thickening


def test_dilated_rv_group(cohort):
    rv_edv = {g: np.median([_volume_ml(p.ed_label, 1, p.spacing) for p in cohort if p.info["Group"] == g]) for g in GROUPS}
    assert rv_edv["RV"] > 1.2 * rv_edv["NOR"]


def test_base_descends_toward_the_apex(cohort):
    """Through-plane motion: at ES the LV's basal slice lies one or more slices lower, as the base descends 10-15 mm."""
    descent_mm = {}
    for p in cohort:
        steps = _basal_lv_slice(p.es_label) - _basal_lv_slice(p.ed_label)
        assert steps >= 0, p.patient
        descent_mm[p.patient] = (steps * p.spacing[2], p.info["Group"])
    # Slice spacing quantises the measure (5-10 mm); contracting hearts always lose a basal slice.
    assert all(mm >= 5 for mm, group in descent_mm.values() if group in ("NOR", "HCM", "RV")), descent_mm
    assert 8 <= np.mean([mm for mm, _ in descent_mm.values()]) <= 20, descent_mm


def test_trabeculae_and_papillary_muscles_fill_the_cavity_at_es(cohort):
    """Dark (myocardial) tissue inside the LV label, as in ACDC, and more of it at ES in a contracting heart."""
    for p in cohort[:10]:
        pair = _pair(p)
        dark = []
        for image, label in ((pair.fixed, pair.fixed_label), (pair.moving, pair.moving_label)):
            threshold = (np.median(image[label == 3]) + np.median(image[label == 2])) / 2
            dark.append(np.mean(image[label == 3] < threshold))
        assert min(dark) >= 0.02, (p.patient, dark)
        if p.info["Group"] in ("NOR", "HCM", "RV"):
            assert dark[1] > dark[0], (p.patient, dark)


def test_blood_brightness_changes_between_frames(cohort):
    """Flow: the LV blood's brightness at ES differs from ED's, by a different amount per patient."""
    ratios = []
    for p in cohort:
        pair = _pair(p)
        ed = np.percentile(pair.fixed[pair.fixed_label == 3], 90) / np.percentile(pair.fixed[pair.fixed_label == 2], 50)
        es = np.percentile(pair.moving[pair.moving_label == 3], 90) / np.percentile(pair.moving[pair.moving_label == 2], 50)
        ratios.append(es / ed)
    assert np.std(ratios) > 0.04 and np.mean(np.abs(np.log(ratios)) > 0.05) >= 0.25, np.round(ratios, 3)


def test_preprocessed_pairs_look_like_acdc(cohort):
    dices = []
    for p in cohort[:10]:
        pair = _pair(p)
        for label in (pair.fixed_label, pair.moving_label):
            assert set(np.unique(label)) == {0, 1, 2, 3}, p.patient
        dices.append(dice_per_class(pair.moving_label, pair.fixed_label)["mean"])
        # Intensity ordering of ACDC: LV blood > RV blood > myocardium.
        f = pair.fixed
        lv, rv, myo = (np.median(f[pair.fixed_label == c]) for c in (3, 1, 2))
        assert lv > rv > myo, (p.patient, lv, rv, myo)
    mean = float(np.mean(dices))
    assert 0.58 <= mean <= 0.72, mean  # the paper's initial mean Dice on real ACDC: 0.651


def test_annotation_moves_outlines_by_about_a_millimetre():
    """Hand contouring: a disc's outline moves a little, smoothly and differently per slice; its area stays."""
    spacing = 1.5
    x, y = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    disc = ((x - 48) ** 2 + (y - 48) ** 2 <= 20**2).astype(np.uint8)
    drawn = _annotate(np.random.default_rng(0), np.repeat(disc[:, :, None], 2, axis=2), spacing)
    changed = drawn != disc[:, :, None]
    to_outline = np.minimum(distance_transform_edt(disc), distance_transform_edt(1 - disc))
    assert changed.any(axis=(0, 1)).all()  # every slice is contoured anew ...
    assert not np.array_equal(drawn[:, :, 0], drawn[:, :, 1])  # ... on its own
    assert to_outline[changed.any(axis=2)].max() <= 3 * ANNOTATION_JITTER_MM / spacing  # only near the outline
    assert np.abs(drawn.sum(axis=(0, 1)) / disc.sum() - 1).max() < 0.1

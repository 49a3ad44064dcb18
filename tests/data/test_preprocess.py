"""Preprocessing geometry against hand-built volumes, pair files, atomic failure, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from acdc_builders import box_volume, make_root, write_acdc_patient

from featreg.cli import main
from featreg.data.acdc import read_patient
from featreg.data.pairs import load_pair, pair_name, patient_pair_dirs
from featreg.data.preprocess import (
    PreprocessOptions,
    chosen_slices,
    middle_slice,
    normalise,
    preprocess_patient,
    resample_slice,
    sample_grid,
)
from featreg.errors import ConfigError, InputError
from featreg.data.pairs import PAIR_FAILURE
from featreg.jobs.data import COHORT_MANIFEST, preprocess_cohort, preprocess_shard

SPACING = (0.9, 1.2, 10.0)
# Label box: LV x 80..119, y 60..89 = 36 x 36 mm; with Myo ring and RV the bounding box is x 74..121, y 58..91.
BOX = ((80, 120), (60, 90))


def _bbox(mask):
    xs, ys = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return xs[0], xs[-1], ys[0], ys[-1]


@pytest.fixture
def patient(tmp_path):
    image, label = box_volume(shape=(200, 160, 5), slices=(1, 2, 3), box=BOX)
    write_acdc_patient(tmp_path, "patient121", ed_image=image, ed_label=label, spacing=SPACING)
    return read_patient(tmp_path, "patient121")


def test_geometry(patient):
    pair = preprocess_patient(patient)
    assert pair.fixed.shape == pair.moving_label.shape == (128, 128)
    assert pair.spacing == (1.8, 1.8)
    assert pair.fixed.dtype == np.float32 and pair.fixed.min() == 0.0 and pair.fixed.max() == 1.0
    assert set(np.unique(pair.fixed_label)) == {0, 1, 2, 3}
    assert pair.provenance["slice_index"] == 2
    assert pair.provenance["crop"]["centre_index"] == [97.5, 74.5]  # (74 + 121) / 2, (58 + 91) / 2
    x0, x1, y0, y1 = _bbox(pair.fixed_label > 0)
    assert abs((x0 + x1) / 2 - 63.5) <= 0.5 and abs((y0 + y1) / 2 - 63.5) <= 0.5
    lx0, lx1, ly0, ly1 = _bbox(pair.fixed_label == 3)
    assert lx1 - lx0 + 1 == 20 and abs((ly1 - ly0 + 1) - 20) <= 1  # 36 mm / 1.8 mm


def test_linear_resampling_of_a_ramp():
    ramp = np.repeat(np.arange(100, dtype=np.float32)[:, None], 80, axis=1)
    options = PreprocessOptions(size=16)
    grid = sample_grid((50.0, 40.0), (0.9, 1.2), options)
    out = resample_slice(ramp, grid, order=1)
    np.testing.assert_allclose(out[:, 0], 50.0 + (np.arange(16) - 7.5) * 2.0, atol=1e-4)  # 1.8 / 0.9 = 2 px per step
    np.testing.assert_allclose(out, out[:, :1].repeat(16, axis=1))


def test_nearest_labels_and_padding():
    label = np.zeros((10, 10), np.uint8)
    label[4:6, 4:6] = 3
    out = resample_slice(label, sample_grid((4.5, 4.5), (1.8, 1.8), PreprocessOptions(size=32)), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3} and (out == 3).sum() == 4
    assert out[0, 0] == 0  # outside the source: zero padding


@pytest.mark.parametrize(("slices", "expected"), [((1, 2, 3), 2), ((0, 1, 2, 3), 1), ((4,), 4)])
def test_middle_slice(slices, expected):
    assert middle_slice(box_volume(slices=slices)[1]) == expected


def test_crop_reference_slice(tmp_path):
    image, label = box_volume(shape=(200, 160, 5), slices=(2,), box=BOX)
    label[10:20, 10:20, 1] = 3  # far away on another slice: moves the whole-heart box only
    write_acdc_patient(tmp_path, "patient121", ed_image=image, ed_label=label, spacing=SPACING)
    patient = read_patient(tmp_path, "patient121")
    assert middle_slice(label) == 1
    pair = preprocess_patient(patient, PreprocessOptions(crop_reference="slice"))
    assert pair.provenance["crop"]["centre_index"] == [14.5, 14.5]  # slice 1 is the middle of 1..2


def test_normalise_with_percentiles():
    values = np.linspace(0, 1, 10000, dtype=np.float32).reshape(100, 100)
    values[0, 0] = 1e6
    plain = normalise(values)
    clipped = normalise(values, (1, 99))
    assert plain.max() == 1 and np.median(plain) < 1e-5
    assert clipped.min() == 0 and clipped.max() == 1 and abs(np.median(clipped) - 0.5) < 0.01
    with pytest.raises(ValueError, match="constant intensity"):
        normalise(np.ones((4, 4)))


def test_options_checked():
    with pytest.raises(ConfigError, match="clip_percentiles must satisfy"):
        PreprocessOptions(clip_percentiles=(99, 1))
    with pytest.raises(ConfigError, match="crop_reference must be 'heart' or 'slice'"):
        PreprocessOptions(crop_reference="box")
    with pytest.raises(ConfigError, match="size must be >= 16, got 8"):
        PreprocessOptions(size=8)


def test_bad_command_line_value_is_one_line_not_a_traceback(tmp_path, capsys):
    assert main(["preprocess", "--root", str(tmp_path), "--out", str(tmp_path / "pairs"), "--size", "4"]) == 2
    assert capsys.readouterr().err == "featreg preprocess: error: size must be >= 16, got 4\n"


def test_empty_ed_mask_on_chosen_slice(tmp_path):
    image, label = box_volume(slices=(0, 4))
    write_acdc_patient(tmp_path, "patient121", ed_image=image, ed_label=label)
    with pytest.raises(InputError, match="patient121_frame01_gt.nii.gz: the ED label is empty on the chosen slice 2"):
        preprocess_patient(read_patient(tmp_path, "patient121"))


def test_write_load_round_trip_and_failed_patient_leaves_only_its_reason(tmp_path):
    root = make_root(tmp_path / "acdc")
    image, label = box_volume(slices=(0, 4))
    write_acdc_patient(root, "patient122", ed_image=image, ed_label=label)  # replaces the good one with a bad one
    out = tmp_path / "pairs"
    with pytest.raises(InputError, match="1 of 2 patients failed:\npatient patient122, .*empty on the chosen slice"):
        preprocess_cohort(root, out, "test")
    assert sorted(p.name for p in out.iterdir()) == sorted([COHORT_MANIFEST, "patient121", "patient122"])  # no temporary folders
    assert [p.name for p in (out / "patient122").iterdir()] == [PAIR_FAILURE]
    statuses = json.loads((out / COHORT_MANIFEST).read_text())["patients"]
    assert statuses["patient121"]["status"] == "ok" and statuses["patient122"]["status"] == "failed"
    assert sorted(p.name for p in (out / "patient121").iterdir()) == [
        "fixed_image.nii.gz", "fixed_label.nii.gz", "moving_image.nii.gz", "moving_label.nii.gz", "pair.json",
    ]  # fmt: skip
    pair = load_pair(out / "patient121")
    expected = preprocess_patient(read_patient(root, "patient121"))
    np.testing.assert_array_equal(pair.fixed, expected.fixed)
    np.testing.assert_array_equal(pair.moving_label, expected.moving_label)
    assert pair.spacing == (1.8, 1.8) and pair.patient == "patient121"
    meta = json.loads((out / "patient121" / "pair.json").read_text())
    assert meta["slice_index"] == 2 and meta["group"] == "NOR" and meta["original_spacing"] == [1.5, 1.5, 10.0]
    assert meta["source"]["es_image"].endswith("patient121_frame12.nii.gz")


def test_cli_preprocess(tmp_path, capsys):
    root = make_root(tmp_path / "acdc")
    out = tmp_path / "pairs"
    argv = ["preprocess", "--root", str(root), "--out", str(out), "--patients", "patient122", "--size", "64"]
    assert main([*argv, "--clip-percentiles", "1", "99"]) == 0
    pair = load_pair(out / "patient122")
    assert pair.fixed.shape == (64, 64) and pair.provenance["options"]["clip_percentiles"] == [1.0, 99.0]
    assert main(["preprocess", "--root", str(root), "--out", str(out), "--patients", "patient009"]) == 2
    assert "requested patient(s) not found: patient009" in capsys.readouterr().err


def test_chosen_slices_middle_all_and_offsets():
    _, ed = box_volume(shape=(60, 50, 8), slices=(1, 2, 3, 4, 5))
    _, es = box_volume(shape=(60, 50, 8), slices=(2, 3, 4, 5, 6))
    assert chosen_slices(ed, es, "middle") == [3]  # (1 + 5) // 2
    assert chosen_slices(ed, es, "all") == [2, 3, 4, 5]  # the ED extent 1..5, with ES labels too
    assert chosen_slices(ed, es, (-1, 0, 2)) == [2, 3, 5]
    with pytest.raises(ValueError, match=r"slice offset\(s\) \[-4, 5\] from the middle slice 3 fall outside the 8 slices"):
        chosen_slices(ed, es, (-4, 0, 5))
    with pytest.raises(ConfigError, match="slice offsets repeat a value"):
        PreprocessOptions(slices=(0, 0))
    with pytest.raises(ConfigError, match="slices must be 'middle', 'all' or offsets"):
        PreprocessOptions(slices="every")


def test_every_slice_becomes_a_pair_and_a_bad_slice_fails_alone(tmp_path):
    image, label = box_volume(shape=(60, 50, 6), slices=(1, 2, 3, 4))
    image[:, :, 4] = 7.0  # constant intensity: this slice cannot be scaled to [0, 1]
    write_acdc_patient(tmp_path / "acdc", "patient121", ed_image=image, ed_label=label)
    write_acdc_patient(tmp_path / "acdc", "patient122", ed_image=image, ed_label=np.zeros_like(label))
    out, manifest = tmp_path / "pairs", tmp_path / "s000.json"
    options = PreprocessOptions(size=32, slices="all")
    preprocess_shard(tmp_path / "acdc", ["patient121", "patient122"], out, manifest, options)
    pairs = patient_pair_dirs(out / "patient121")
    assert [pair_name(p) for p in pairs] == [f"patient121/slice0{k}" for k in (1, 2, 3, 4)]
    for k, pair in zip((1, 2, 3), pairs):
        loaded = load_pair(pair)
        assert loaded.patient == "patient121" and loaded.provenance["slice_index"] == k
        expected = preprocess_patient(read_patient(tmp_path / "acdc", "patient121"), options, k)
        np.testing.assert_array_equal(loaded.fixed, expected.fixed)
    assert [p.name for p in pairs[3].iterdir()] == [PAIR_FAILURE]
    assert "constant intensity after cropping slice 4" in json.loads((pairs[3] / PAIR_FAILURE).read_text())["reason"]
    statuses = json.loads(manifest.read_text())["patients"]
    assert statuses["patient121"] == {"status": "ok", "reason": "", "slices": 4, "failed_slices": [4]}
    assert statuses["patient122"]["status"] == "failed"  # no ED label at all: the patient fails alone
    assert patient_pair_dirs(out / "patient122") == [out / "patient122"]
    mtime = (out / "patient121" / "slices.json").stat().st_mtime_ns
    preprocess_shard(tmp_path / "acdc", ["patient121"], out, manifest, options)  # current: kept as it is
    assert (out / "patient121" / "slices.json").stat().st_mtime_ns == mtime
    assert json.loads(manifest.read_text())["patients"]["patient121"]["resumed"]
    preprocess_shard(tmp_path / "acdc", ["patient121"], out, manifest, PreprocessOptions(size=32))  # back to middle
    assert patient_pair_dirs(out / "patient121") == [out / "patient121"]
    assert load_pair(out / "patient121").provenance["slice_index"] == 2

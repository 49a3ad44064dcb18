"""Manifest cohorts: rows checked, 2D and 3D NIfTI pairs read with their pixdim, a bad row failing alone."""

from __future__ import annotations

import json

import pytest
from acdc_builders import box_volume

from featreg.data.manifest import manifest_roles, read_manifest
from featreg.data.nifti import write_nifti
from featreg.data.pairs import load_pair
from featreg.data.preprocess import PreprocessOptions
from featreg.errors import InputError
from featreg.data.pairs import PAIR_FAILURE
from featreg.jobs.data import preprocess_shard

HEADER = "patient,fixed_image,fixed_label,moving_image,moving_label,split,group"


def write_case(folder, name, image, label, spacing):
    """Four NIfTI files of one case (the moving frame equal to the fixed one); returns their names."""
    names = [f"{name}_{kind}.nii.gz" for kind in ("fi", "fl", "mi", "ml")]
    for file, array in zip(names, (image, label, image, label)):
        write_nifti(folder / file, array, spacing)
    return names


@pytest.fixture
def cohort(tmp_path):
    """A TSV manifest of a 3D case (0.9 x 1.2 x 10 mm) and a 2D one (1.5 x 1.5 mm) in images/."""
    images = tmp_path / "images"
    images.mkdir()
    image, label = box_volume(shape=(60, 50, 5))
    volume = write_case(images, "a", image, label, (0.9, 1.2, 10.0))
    flat = write_case(images, "b", image[:, :, 2], label[:, :, 2], (1.5, 1.5))
    rows = [HEADER.replace(",", "\t"), "\t".join(["case-a", *(f"images/{f}" for f in volume), "test", "HCM"]),
            "\t".join(["case-b", *(f"images/{f}" for f in flat), "val", "NOR"])]
    (tmp_path / "cohort.tsv").write_text("\n".join(rows) + "\n")
    return tmp_path / "cohort.tsv"


def test_rows_resolve_paths_and_read_as_pairs(cohort, tmp_path):
    rows = read_manifest(cohort)
    assert list(rows) == ["case-a", "case-b"] and manifest_roles(rows) == {"case-a": "test", "case-b": "val"}
    assert rows["case-a"].files["fixed_image"] == (tmp_path / "images/a_fi.nii.gz").resolve()
    out, manifest = tmp_path / "pairs", tmp_path / "s000.json"
    preprocess_shard(cohort, ["case-a", "case-b"], out, manifest, PreprocessOptions(size=32))
    a, b = load_pair(out / "case-a"), load_pair(out / "case-b")
    assert a.provenance["original_spacing"] == pytest.approx([0.9, 1.2, 10.0]) and a.provenance["slice_index"] == 2
    assert b.provenance["original_spacing"] == [1.5, 1.5, 1.0] and b.provenance["n_slices"] == 1
    assert a.provenance["group"] == "HCM" and a.fixed.shape == b.fixed.shape == (32, 32)
    assert json.loads(manifest.read_text())["patients"]["case-b"]["status"] == "ok"


def test_a_bad_row_fails_alone_naming_its_line_and_file(cohort, tmp_path):
    (tmp_path / "images/b_ml.nii.gz").unlink()
    out, manifest = tmp_path / "pairs", tmp_path / "s000.json"
    preprocess_shard(cohort, ["case-a", "case-b"], out, manifest, PreprocessOptions(size=32))
    assert load_pair(out / "case-a").patient == "case-a"
    assert [p.name for p in (out / "case-b").iterdir()] == [PAIR_FAILURE]
    reason = json.loads(manifest.read_text())["patients"]["case-b"]["reason"]
    assert reason == f"patient case-b, file {(tmp_path / 'images/b_ml.nii.gz').resolve()}: manifest line 3: file is missing"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("patient,fixed_image\nx,a.nii.gz\n", "manifest lacks column(s) fixed_label, moving_image, moving_label"),
        (f"{HEADER}\nx,a,b,c,d,test,\nx,a,b,c,d,test,\n", "line 3: patient x already has a row (line 2)"),
        (f"{HEADER}\nx,a,b,c,d,holdout,\n", "line 2: split 'holdout' is not one of train, val, test"),
        (f"{HEADER}\nx,a,,c,d,,\n", "line 2: empty fixed_label"),
        (f"{HEADER}\nx/y,a,b,c,d,,\n", "line 2: patient id 'x/y' must be letters, digits"),
    ],
)
def test_bad_manifest_is_one_error_naming_line_and_problem(tmp_path, text, message):
    path = tmp_path / "cohort.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(path)


def test_labels_outside_the_configured_classes_are_refused(cohort, tmp_path):
    image, label = box_volume(shape=(60, 50, 5))
    label[0, 0, 2] = 7
    write_nifti(tmp_path / "images/a_fl.nii.gz", label, (0.9, 1.2, 10.0))
    out, manifest = tmp_path / "pairs", tmp_path / "s000.json"
    preprocess_shard(cohort, ["case-a"], out, manifest, PreprocessOptions(size=32))
    reason = json.loads(manifest.read_text())["patients"]["case-a"]["reason"]
    assert reason.endswith("manifest line 2: label values outside {0, 1, 2, 3}: [7]")

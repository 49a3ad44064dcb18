"""Real cohorts through the real workflow: both ACDC layouts (and, below, other layouts) to metrics.csv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from workflow_helpers import load_config, snakemake, write_config

from featreg.data.acdc import frame_files, list_patients, parse_info_cfg, patient_dir
from featreg.evaluation.metrics_table import MEASURED_COLUMNS

pytestmark = pytest.mark.slow

PATIENTS = 2


def small_config(name: str, root: Path) -> dict:
    """config/test.yaml on an ACDC-layout cohort at ``root``, with the baseline only (cheap to run)."""
    config = load_config("test.yaml")
    config["name"] = name
    config["dataset"] = {"kind": "acdc", "root": str(root), "split": "all"}
    config["grid"]["encoders"] = []
    config["methods"].pop("elastix")
    config["figures"]["feature_encoders"] = []
    return config


def synthetic_cohort(root: Path) -> Path:
    """The first synthetic patients written by `featreg synth` (ACDC's database/ layout) under ``root``."""
    featreg = Path(sys.executable).parent / "featreg"
    subprocess.run([str(featreg), "synth", "--out", str(root), "--patients", str(PATIENTS)], check=True)
    return root


def test_older_acdc_layout_without_database_folder_runs_to_metrics(workdir: Path):
    older = synthetic_cohort(workdir / "acdc-old")
    for subset in (older / "database").iterdir():
        shutil.move(str(subset), older / subset.name)
    (older / "database").rmdir()
    assert (older / "training" / "patient001" / "Info.cfg").is_file()
    write_config(workdir / "config/old.yaml", small_config("old", older))
    snakemake(workdir, "--configfile", "config/old.yaml", "--cores", "2", "reports/old/metrics.csv")
    table = pd.read_csv(workdir / "reports/old/metrics.csv")
    assert set(table["patient"]) == {"patient001", "patient002"}
    assert set(table["method"]) == {"initial", "ncc"}
    assert (table["status"] == "ok").all()


def test_slice_offsets_give_a_row_per_slice_and_patient_level_statistics(workdir: Path):
    config = small_config("slices", workdir / "synthetic")
    config["dataset"] = {"kind": "synthetic", "root": "resources/synthetic/seed0", "split": "all",
                         "synthetic": {"patients": PATIENTS, "seed": 0}}
    config["methods"]["ncc-lam60"] = {"settings": {"lam": 60.0}}  # a second method to compare with the baseline
    config["preprocess"] = {"slices": [-1, 0, 1]}
    write_config(workdir / "config/slices.yaml", config)
    snakemake(workdir, "--configfile", "config/slices.yaml", "--cores", "2")
    table = pd.read_csv(workdir / "reports/slices/metrics.csv")
    assert len(table) == 3 * PATIENTS * 3  # initial, ncc, ncc-lam60 x patients x slices
    for patient, rows in table[table["method"] == "ncc"].groupby("patient"):
        pair = json.loads((workdir / f"results/slices/pairs/{patient}/slice{rows['slice'].iloc[1]:02d}/pair.json").read_text())
        assert list(rows["slice"]) == [pair["slice_index"] - 1, pair["slice_index"], pair["slice_index"] + 1]
    statistics = pd.read_csv(workdir / "reports/slices/statistics.csv")
    assert set(statistics["n_pairs"]) == {PATIENTS}  # tests pair patients, not slices
    html = (workdir / "reports/slices/report.html").read_text()
    assert f"Pairs: {PATIENTS} patients, {3 * PATIENTS} slices (one pair per slice)" in html


def export_manifest(root: Path, path: Path) -> Path:
    """The ACDC-layout cohort under ``root`` as a manifest at ``path``: ED fixed, ES moving, paths relative to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["patient,fixed_image,fixed_label,moving_image,moving_label,group"]
    for patient in list_patients(root):
        folder = patient_dir(root, patient)
        info = parse_info_cfg(folder / "Info.cfg")
        ed, es = (frame_files(folder, patient, int(info[key])) for key in ("ED", "ES"))
        files = [os.path.relpath(f, path.parent) for f in (*ed, *es)]
        lines.append(",".join([patient, *files, str(info["Group"])]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_cohort_exported_as_a_manifest_gives_the_same_metrics(workdir: Path):
    root = synthetic_cohort(workdir / "acdc")
    write_config(workdir / "config/layout.yaml", small_config("layout", root))
    snakemake(workdir, "--configfile", "config/layout.yaml", "--cores", "2", "reports/layout/metrics.csv")
    manifest = export_manifest(root, workdir / "cohort" / "pairs.csv")
    config = small_config("manifest", manifest)
    config["dataset"]["kind"] = "manifest"
    write_config(workdir / "config/manifest.yaml", config)
    snakemake(workdir, "--configfile", "config/manifest.yaml", "--cores", "2", "reports/manifest/metrics.csv")
    layout = pd.read_csv(workdir / "reports/layout/metrics.csv").drop(columns=list(MEASURED_COLUMNS))
    from_manifest = pd.read_csv(workdir / "reports/manifest/metrics.csv").drop(columns=list(MEASURED_COLUMNS))
    assert len(layout) == 2 * PATIENTS
    pd.testing.assert_frame_equal(from_manifest, layout)


def test_configured_label_classes_name_every_metric_column_and_caption(workdir: Path):
    manifest = export_manifest(synthetic_cohort(workdir / "acdc"), workdir / "pairs.csv")
    config = small_config("chambers", manifest)
    config["dataset"]["kind"] = "manifest"
    config["labels"] = {"LA": 1, "Wall": 2, "LVc": 3}  # other structures, the same label maps
    write_config(workdir / "config/chambers.yaml", config)
    snakemake(workdir, "--configfile", "config/chambers.yaml", "--cores", "2")
    table = pd.read_csv(workdir / "reports/chambers/metrics.csv")
    assert [c for c in table.columns if c.startswith(("dice_", "hd95_"))] == [
        "dice_LA", "dice_Wall", "dice_LVc", "dice_mean", "hd95_LA", "hd95_Wall", "hd95_LVc", "hd95_mean", "hd95_empty"]
    html = (workdir / "reports/chambers/report.html").read_text()
    assert "Dice per class (LA, Wall, LVc)" in html and "contours LA red, Wall green, LVc blue" in html
    assert "RV" not in (workdir / "reports/chambers/summary.csv").read_text()

    config["labels"] = {"LA": 1, "Wall": 2}  # a class the label maps hold is missing: each pair fails alone
    config["name"] = "missing"
    write_config(workdir / "config/missing.yaml", config)
    snakemake(workdir, "--configfile", "config/missing.yaml", "--cores", "2", "reports/missing/metrics.csv")
    table = pd.read_csv(workdir / "reports/missing/metrics.csv")
    assert (table["status"] == "failed").all()
    assert table["reason"].str.contains(r"manifest line \d: label values outside \{0, 1, 2\}: \[3\]").all()

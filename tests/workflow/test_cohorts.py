"""Real cohorts through the real workflow: both ACDC layouts (and, below, other layouts) to metrics.csv."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import load_config, snakemake, write_config

pytestmark = pytest.mark.slow

PATIENTS = 2


def small_config(name: str, root: Path) -> dict:
    """config/test.yaml on an ACDC-layout cohort at ``root``, with the baseline only (cheap to run)."""
    config = load_config("test.yaml")
    config["name"] = name
    config["dataset"] = {"kind": "acdc", "root": str(root), "split": "all"}
    config["grid"]["encoders"] = []
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

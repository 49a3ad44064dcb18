"""Real cohorts through the real workflow: both ACDC layouts (and, below, other layouts) to metrics.csv."""

from __future__ import annotations

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

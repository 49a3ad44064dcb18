"""The real Snakemake workflow end to end on a tiny synthetic cohort, and its DAG properties."""

from __future__ import annotations

import re
import time
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_helpers import load_config, snakemake, write_config

pytestmark = pytest.mark.slow


def planned_jobs(proc) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts: dict[str, int] = {}
    text = proc.stdout + proc.stderr
    block = text.split("Job stats:", 1)[1] if "Job stats:" in text else ""
    for line in block.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One complete run of config/test.yaml, shared by the tests that read its outputs."""
    import shutil

    from workflow_helpers import REPO

    workdir = tmp_path_factory.mktemp("run")
    shutil.copytree(REPO / "config", workdir / "config")
    snakemake(workdir, "--configfile", "config/test.yaml", "--cores", "2")
    return workdir


def test_metrics_table_has_a_row_per_method_and_patient(finished_run: Path):
    table = pd.read_csv(finished_run / "reports/test/metrics.csv")
    methods = {"initial", "ncc", "elastix", "mind-cosine-v1", "mind-cosine-v2"}
    assert set(table["method"]) == methods
    assert len(table) == len(methods) * 3
    assert set(table["patient"]) == {"patient001", "patient002", "patient003"}
    assert (table["status"] == "ok").all()
    for column in ["dice_RV", "dice_Myo", "dice_LV", "dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct", "seconds", "iterations"]:
        assert column in table.columns
    dice = table[["dice_RV", "dice_Myo", "dice_LV", "dice_mean"]].to_numpy()
    assert np.all((dice >= 0) & (dice <= 1))
    initial = table[table.method == "initial"].set_index("patient")
    ncc = table[table.method == "ncc"].set_index("patient")
    assert (initial["sdlogj"] == 0).all() and (initial["neg_jac_pct"] == 0).all()
    assert ncc["dice_mean"].mean() > initial["dice_mean"].mean()
    assert (ncc["iterations"] == 20).all()
    v2 = table[table.method == "mind-cosine-v2"]
    assert set(v2["variant"]) == {"combined"} and np.allclose(v2["alpha"], 0.3)
    elastix = table[table.method == "elastix"].set_index("patient")
    assert set(elastix["variant"]) == {"classical"} and (elastix["iterations"] == 2 * 50).all()
    assert elastix[["dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct", "seconds"]].notna().all().all()
    assert elastix["dice_mean"].mean() > initial["dice_mean"].mean()


def test_report_and_figures_are_written(finished_run: Path):
    reports = finished_run / "reports/test"
    html = (reports / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64," in html
    assert "Dice" in html and "HD95" in html
    assert "ncc" in (reports / "table1.md").read_text()
    assert "| no encoder | classical | elastix |" in (reports / "table1.md").read_text()
    pngs = sorted(reports.rglob("*.png"))
    assert pngs, "no figures written"
    for png in pngs:
        image = mpimg.imread(png)
        assert image.shape[0] > 50 and image.shape[1] > 50


def test_snakemake_report_bundles_the_report(finished_run: Path):
    snakemake(finished_run, "--configfile", "config/test.yaml", "--report", "snakemake-report.html")
    assert "report.html" in (finished_run / "snakemake-report.html").read_text()


def test_adding_an_encoder_reruns_only_its_jobs(finished_run: Path):
    config = load_config("test.yaml")
    assert planned_jobs(snakemake(finished_run, "--configfile", "config/test.yaml", "-n")) == {}
    config["encoders"]["mind2"] = {"kind": "mind", "grid": 16}
    config["grid"]["encoders"].append("mind2")
    write_config(finished_run / "config/grown.yaml", config)
    jobs = planned_jobs(snakemake(finished_run, "--configfile", "config/grown.yaml", "-n"))
    shards = 2  # 3 patients, shard_size 2
    assert jobs == {
        "encoder_spec": 1,  # the new encoder's spec file
        "method_file": 2,  # mind2-cosine-v1 and -v2
        "save_config": 1,  # the report's copy of the config
        "cache_features": shards,
        "register": 2 * shards,  # mind2-cosine-v1 and -v2, each evaluated in its job
        "collect_metrics": 1,
        "report": 1,
        "all": 1,
    }


def test_reordering_config_keys_plans_only_the_report(finished_run: Path):
    # The config re-saved as a new user would (yaml.safe_dump sorts every mapping's keys):
    # same content, so the spec and method files, features and registrations stay; only
    # the report's copy of the config (and the report) follow the file.
    config_file = finished_run / "config/sorted.yaml"
    config_file.write_text(yaml.safe_dump(load_config("test.yaml"), sort_keys=True))
    assert config_file.read_text() != (finished_run / "config/test.yaml").read_text()
    jobs = planned_jobs(snakemake(finished_run, "--configfile", str(config_file.relative_to(finished_run)), "-n"))
    assert jobs == {"save_config": 1, "report": 1, "all": 1}


def test_paper_config_plans_its_grid_in_seconds(workdir: Path):
    root = workdir / "acdc"
    for number in range(1, 151):
        subset = "training" if number <= 100 else "testing"
        (root / "database" / subset / f"patient{number:03d}").mkdir(parents=True)
    config = load_config("paper.yaml")
    config["dataset"]["root"] = str(root)
    medsam = workdir / "resources/checkpoints/medsam_vit_b.pth"  # no URL: users download it by hand
    medsam.parent.mkdir(parents=True)
    medsam.touch()
    write_config(workdir / "config/paper-here.yaml", config)
    started = time.perf_counter()
    proc = snakemake(workdir, "--configfile", "config/paper-here.yaml", "-n")
    elapsed = time.perf_counter() - started
    jobs = planned_jobs(proc)
    proc_text = proc.stdout + proc.stderr
    # One test shard (121-150) and one validation shard (101-120). Test: ncc, the no-upsampling
    # ablation, 3 encoders x 2 distances x 2 variants and the alpha sweep (0.1..1.0 minus 0.3 and
    # 1.0, already in the grid) = 22 methods, the grid's 12 -once rows, plus one tuned method per tuned
    # method (13); tuning: 13 methods x 12 grid points on the validation shard. elastix has its own
    # rule: itself, its tuned row and its 12 grid points. Features: 4 encoders on test, 3 on val.
    assert jobs["preprocess"] == 2
    assert jobs["register"] == 22 + 12 + 13 + 13 * 12
    assert jobs["register_elastix"] == 1 + 1 + 12
    assert jobs["cache_features"] == 4 + 3
    assert jobs["fetch_checkpoint"] == 2  # DINOv2 (shared by two encoders) and SAM
    assert "4830 registrations" in proc_text  # 49 x 30 test + 14 x 12 x 20 validation
    passes = proc_text.split("projected encoder passes: ", 1)[1].splitlines()[0]
    assert "dinov2 " in passes and "sam " in passes and "(once)" in passes
    assert elapsed < 60


def test_default_config_plans_an_elastix_row_without_a_gpu(workdir: Path):
    proc = snakemake(workdir, "-n")  # config/config.yaml
    jobs = planned_jobs(proc)
    # ncc, 2 encoders x 2 distances x 2 variants in both encode modes, 3 sweep points, 4 real-weight once rows
    assert jobs["register_elastix"] == 1 and jobs["register"] == 1 + 16 + 3 + 4
    text = proc.stdout + proc.stderr
    block = re.split(r"\n\[|\nrule ", text[text.index("rule register_elastix:"):])[0]
    assert "results/default/registration/elastix/shards/s000.json" in block and "gpu" not in block
    assert "results/default/metrics/elastix/s000.csv" in block  # evaluated in its job, collected as any method


def test_bad_config_fails_with_a_clear_message(workdir: Path):
    config = load_config("test.yaml")
    config["compute"]["shard_size"] = 0
    write_config(workdir / "config/bad.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/bad.yaml", "-n", check=False)
    assert proc.returncode != 0
    assert "shard_size" in proc.stdout + proc.stderr

    config = load_config("test.yaml")
    config["grid"]["encoders"] = ["nonexistent"]
    write_config(workdir / "config/bad2.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/bad2.yaml", "-n", check=False)
    assert proc.returncode != 0
    assert "unknown encoder 'nonexistent'" in proc.stdout + proc.stderr

    config = load_config("test.yaml")
    config["figures"]["patient"] = "patient099"
    write_config(workdir / "config/bad3.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/bad3.yaml", "-n", check=False)
    assert proc.returncode != 0
    assert "figures.patient 'patient099' is not among the test patients" in proc.stdout + proc.stderr

    config = load_config("test.yaml")
    config["methods"]["elastix"]["settings"]["metric"] = "Correlation"
    write_config(workdir / "config/bad4.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/bad4.yaml", "-n", check=False)
    assert proc.returncode != 0
    assert "method elastix: elastix metric must be one of" in proc.stdout + proc.stderr

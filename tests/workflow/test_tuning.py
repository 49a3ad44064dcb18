"""The tuning protocol end to end: a tiny real run of config/tuning.yaml, and what a new grid point reruns."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from workflow_helpers import REPO, load_config, snakemake, write_config

pytestmark = pytest.mark.slow


def tiny_tuning_config() -> dict:
    """config/tuning.yaml shrunk: 2 test and 2 validation patients, 20 iterations, two intensity methods.

    The second method (MSE instead of NCC) stands in for a feature method: an encoder's
    plumbing is the same as in test_workflow.py, and a tiny MIND run costs far more time.
    """
    config = load_config("tuning.yaml")
    config["name"] = "tune"
    config["dataset"]["split"] = [1, 2]
    config["dataset"]["synthetic"]["patients"] = 4
    config["compute"] |= {"device": "cpu", "threads": 1, "mem_mb": 2000, "runtime_min": 10}
    config["registration"]["iterations"] = 20
    config["encoders"] = {}
    config["methods"]["mse"] = {"alpha": 0, "settings": {"image_distance": "mse"}}
    config["methods"].pop("elastix")  # its tuning is planned in test_workflow.py's paper dry run
    config["tuning"].pop("grids")
    config["grid"]["encoders"] = []
    config["tuning"]["split"] = [3, 4]
    # the paper rows are the configured methods here (a paper-settings run of 1500 iterations is not for a test)
    config["tuning"]["paper_settings"] = {k: config["registration"][k] for k in ("lam", "lr", "iterations", "lattice")}
    return config


def planned(proc) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job of a dry run."""
    jobs = []
    for block in re.split(r"\n(?:local)?rule ", proc.stdout + proc.stderr)[1:]:
        rule = block.split(":", 1)[0].strip()
        match = re.search(r"^\s*wildcards: (.*)$", block, re.M)
        wildcards = dict(item.split("=", 1) for item in match.group(1).split(", ")) if match else {}
        jobs.append((rule, wildcards))
    return jobs


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tuning")
    shutil.copytree(REPO / "config", workdir / "config")
    write_config(workdir / "config/tune.yaml", tiny_tuning_config())
    snakemake(workdir, "--configfile", "config/tune.yaml", "--cores", "2")
    return workdir


def test_selection_tuned_rows_verdict_and_fronts(tuned_run: Path):
    reports = tuned_run / "reports/tune"
    selections = {base: json.loads((tuned_run / f"results/tune/tuning/selected/{base}.json").read_text())
                  for base in ("ncc", "mse")}
    validation = pd.read_csv(reports / "tuning/metrics.csv")
    assert set(validation["patient"]) == {"patient003", "patient004"}
    grid = {f"{base}@lam{lam:g}" for base in ("ncc", "mse") for lam in tiny_tuning_config()["tuning"]["grid"]["lam"]}
    assert set(validation["method"]) == grid | {"initial"}
    for base, record in selections.items():
        means = validation[validation["method"].isin([c["method"] for c in record["candidates"]])]
        means = means.groupby("method")[["dice_mean", "neg_jac_pct"]].mean()
        eligible = means[means["neg_jac_pct"] <= 0.1]
        assert record["selected"] == eligible["dice_mean"].idxmax()
        assert record["method"]["name"] == f"{base}@tuned"
        assert record["method"]["settings"]["lam"] == record["values"]["lam"]

    test = pd.read_csv(reports / "metrics.csv")
    assert set(test["patient"]) == {"patient001", "patient002"}  # validation rows never mixed in
    assert set(test["method"]) == {"initial", "ncc", "mse", "ncc@tuned", "mse@tuned"}
    assert (test["status"] == "ok").all()
    for base, record in selections.items():
        run = json.loads((tuned_run / f"results/tune/registration/{base}@tuned/patient001/run.json").read_text())
        assert run["settings"]["lam"] == record["values"]["lam"]

    stats = pd.read_csv(reports / "statistics.csv")
    tuned = stats[stats["family"] == "tuned"]
    assert set(tuned["method"]) == {"mse@tuned"} and set(tuned["reference"]) == {"ncc@tuned"}
    assert (stats["n_pairs"] == 2).all() and set(stats["family"]) == {"paper", "tuned", "tuning"}
    tuning = pd.read_csv(reports / "tuning.csv")
    assert set(tuning["method"]) == grid and tuning.groupby("base")["selected"].sum().eq(1).all()
    assert tuning.groupby("base")["front_sdlogj"].any().all()
    assert mpimg.imread(reports / "pareto_validation.png").shape[0] > 50
    reproduction = (reports / "reproduction.md").read_text()
    assert "| no encoder / NCC | ncc | paper settings |" in reproduction
    assert re.search(r"\| no encoder / NCC \| ncc@tuned \| tuned: lam \d+", reproduction)
    assert "Verdict" in (reports / "report.html").read_text()


def test_adding_a_grid_point_reruns_only_that_point(tuned_run: Path):
    assert planned(snakemake(tuned_run, "--configfile", "config/tune.yaml", "-n")) == []
    config = tiny_tuning_config()
    config["tuning"]["grid"]["lam"].append(120.0)
    write_config(tuned_run / "config/tune.yaml", config)
    proc = snakemake(tuned_run, "--configfile", "config/tune.yaml", "-n")
    assert ("20 registrations (4 methods x 2 test patients; tuning: 2 methods x 3 grid points "
            "x 2 validation patients = 12)") in proc.stdout + proc.stderr
    jobs = planned(proc)
    registered = sorted((w["method"], w["shard"]) for rule, w in jobs if rule == "register")
    # the new point on the validation shard; the tuned runs follow their (possibly changed) selection,
    # and reuse their results when it did not change
    assert registered == [("mse@lam120", "v000"), ("mse@tuned", "s000"),
                          ("ncc@lam120", "v000"), ("ncc@tuned", "s000")]
    assert not {rule for rule, _ in jobs} & {"synthesize", "preprocess", "cache_features"}


def test_overlapping_splits_fail_before_anything_runs(tmp_path: Path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    config = tiny_tuning_config()
    config["tuning"]["split"] = [2, 3]
    write_config(tmp_path / "config/bad.yaml", config)
    proc = snakemake(tmp_path, "--configfile", "config/bad.yaml", "-n", check=False)
    assert proc.returncode != 0
    assert "overlap in 1 patient(s) (patient002)" in proc.stdout + proc.stderr

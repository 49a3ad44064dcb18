"""Every shipped config runs, cut down to a CI budget: fewer patients and iterations, nothing else changed.

- config/config.yaml and config/tuning.yaml run end to end (5 iterations per registration).
- config/test.yaml runs as shipped in test_workflow.py (its ``finished_run`` fixture).
- config/paper.yaml is planned only (a dry run), on the synthetic cohort with its encoders as
  random-weight controls: even there its 651 registrations, most through ViT-B features at
  896 or 1024 px, are far beyond a CI budget on a CPU, so CI checks that the config, switched
  so, builds its whole DAG without a checkpoint, and not that its jobs run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from workflow_helpers import load_config, snakemake, write_config

pytestmark = pytest.mark.slow

ITERATIONS = 5


def cut_down(config: dict, patients: int) -> dict:
    """``config`` on ``patients`` synthetic patients, every registration at :data:`ITERATIONS` iterations, on the CPU,
    with the feature figures of its first encoder only."""
    config["dataset"]["synthetic"]["patients"] = patients
    config["compute"] |= {"device": "cpu", "threads": 1, "mem_mb": 2000, "runtime_min": 10}
    config["registration"]["iterations"] = ITERATIONS
    config["figures"]["feature_encoders"] = config["figures"]["feature_encoders"][:1]  # Fig. 3 encodes ~60 images each
    for method in config["methods"].values():
        if method.get("kind") == "elastix":
            method["settings"]["iterations"] = ITERATIONS
    return config


def run(workdir: Path, config: dict) -> Path:
    """Write ``config`` and run the workflow on it; returns its reports folder."""
    write_config(workdir / "config/here.yaml", config)
    snakemake(workdir, "--configfile", "config/here.yaml", "--cores", "2")
    return workdir / "reports" / config["name"]


def test_default_config_runs_end_to_end(workdir: Path):
    reports = run(workdir, cut_down(load_config("config.yaml"), patients=3))
    metrics = pd.read_csv(reports / "metrics.csv")
    # ncc, elastix, 2 encoders x 2 distances x 2 variants in both encode modes, the alpha sweep's 3 points,
    # the real-weight encoders' once rows, and the unregistered row
    grid = [f"{e}-{d}-{v}{m}" for e in ("mind", "tinyvit") for d in ("cosine", "l1") for v in ("v1", "v2")
            for m in ("", "-once")]
    sweep = [f"mind-cosine-a{a}" for a in ("0.1", "0.5", "0.7")]
    real = [f"{e}-cosine-{v}-once" for e in ("litemedsam", "vgg16") for v in ("v1", "v2")]
    assert set(metrics["method"]) == {"initial", "ncc", "elastix", *grid, *sweep, *real}
    assert (metrics.groupby("method")["patient"].nunique() == 3).all()
    assert (metrics["status"] == "ok").all() and metrics["dice_mean"].notna().all()
    assert (metrics.loc[metrics["method"] == "ncc", "iterations"] == ITERATIONS).all()
    html = (reports / "report.html").read_text()
    assert "Verdict" in html and "Encode once vs every iteration" in html
    # a once row and an each_iteration row of one encoder side by side; only once rows read moving features
    results = workdir / "results/default"
    mind = json.loads((results / "features/mind/s000.json").read_text())
    assert set(mind["moving"]) == set(mind["features"]) and len(mind["moving"]) == 3
    assert all(Path(f).name.endswith(".moving.pt") and (workdir / f).is_file() for f in mind["moving"].values())
    once = json.loads((results / "registration/mind-cosine-v1-once/patient001/run.json").read_text())
    each = json.loads((results / "registration/mind-cosine-v1/patient001/run.json").read_text())
    assert (once["settings"]["encode"], each["settings"]["encode"]) == ("once", "each_iteration")
    assert once["encode_seconds"] > 0 and each["encode_seconds"] > 0
    vgg = json.loads((results / "features/vgg16/s000.json").read_text())
    assert vgg["layer_splits"] == [256, 512] and vgg["identity"]["layers"] == [2, 3]
    assert {"pca.png", "distance_curves.png"} <= {p.name for p in (reports / "features").iterdir()}


def test_tuning_config_completes_when_a_grid_never_meets_its_folding_rule(workdir: Path):
    config = cut_down(load_config("tuning.yaml"), patients=16)  # test 001, 011, 013; validation 005, 016
    config["tuning"]["paper_settings"] = {"iterations": ITERATIONS}
    # NCC's steps are made so large that both its grid points fold: its selection must fall back, not fail
    config["methods"]["ncc"]["settings"] = {"lr": 0.5}
    reports = run(workdir, config)

    validation = pd.read_csv(reports / "tuning/metrics.csv")
    means = validation.groupby("method")["neg_jac_pct"].mean()
    limit = config["tuning"]["select"]["max_neg_jac_pct"]
    ncc_points = [f"ncc@lam{value:g}" for value in config["tuning"]["grid"]["lam"]]
    assert (means[ncc_points] > limit).all()
    records = {base: json.loads((workdir / f"results/tuning/tuning/selected/{base}.json").read_text())
               for base in ("ncc", "elastix", "mind-cosine-v1", "mind-cosine-v2")}
    selected = {base: record["selected"] for base, record in records.items()}
    assert "fold" in records["ncc"]["fallback"] and records["elastix"]["fallback"] is None
    assert "No grid point met the folding rule: ncc@tuned runs" in (reports / "report.html").read_text()
    assert selected["ncc"] == means[ncc_points].idxmin()
    for base in ("elastix", "mind-cosine-v1", "mind-cosine-v2"):
        assert means[selected[base]] <= limit

    test = pd.read_csv(reports / "metrics.csv")
    assert set(test["patient"]) == {"patient001", "patient011", "patient013"}
    assert {f"{base}@tuned" for base in selected} <= set(test["method"])
    assert (test["status"] == "ok").all()


def test_paper_config_plans_on_the_synthetic_cohort_with_random_weight_encoders(workdir: Path):
    config = load_config("paper.yaml")
    config["dataset"] = {"kind": "synthetic", "root": "resources/synthetic/seed0", "split": "test",
                         "synthetic": {"patients": 24, "seed": 0}}
    for encoder in config["encoders"].values():
        encoder.pop("checkpoint")
        encoder["random_init"] = True
    write_config(workdir / "config/here.yaml", config)
    proc = snakemake(workdir, "--configfile", "config/here.yaml", "-n")
    text = proc.stdout + proc.stderr
    assert "fetch_checkpoint" not in text
    # test patients 001, 011, 013; validation patients 005, 016, 022 (roles by seed)
    assert ("651 registrations (49 methods x 3 test patients; tuning: 14 methods x 12 grid points "
            "x 3 validation patients = 504)") in text


def test_real_weights_config_runs_end_to_end_on_the_synthetic_cohort(workdir: Path):
    """config/real_weights.yaml with its dataset switched to the synthetic cohort, cut down: 5 iterations,
    its tuning protocol on three of its methods with two grid points each, and two points of its α sweep."""
    config = cut_down(load_config("real_weights.yaml") | {"dataset": load_config("tuning.yaml")["dataset"]},
                      patients=16)
    config["compute"]["batch_size"] = 4
    config["alpha_sweep"]["alphas"] = [0.5, 1.0]
    tuned = ["ncc", "litemedsam-cosine-v1", "vgg16-cosine-v2"]
    config["tuning"] |= {"methods": tuned, "grid": {"lam": [60.0, 480.0]}, "paper_settings": {"iterations": ITERATIONS},
                         "grids": {"vgg16-cosine-v2": {"lam": [60.0, 480.0]}}}
    reports = run(workdir, config)

    metrics = pd.read_csv(reports / "metrics.csv")
    grid = {f"{e}-{d}-{v}" for e in ("litemedsam", "vgg16") for d in ("cosine", "l1") for v in ("v1", "v2")}
    assert grid | {"ncc", "litemedsam-cosine-a0.5"} | {f"{m}@tuned" for m in tuned} <= set(metrics["method"])
    assert (metrics["status"] == "ok").all() and set(metrics["patient"]) == {"patient001", "patient011", "patient013"}
    # encoded once: the moving images' features come from the features job, with their encoding seconds
    run_json = json.loads((workdir / "results/real_weights/registration/vgg16-l1-v1/patient001/run.json").read_text())
    assert run_json["settings"]["encode"] == "once" and run_json["encode_seconds"] > 0
    features = json.loads((workdir / "results/real_weights/features/litemedsam/s000.json").read_text())
    assert features["layer_splits"] == [320, 256] and features["moving"]

"""Robustness of the real workflow: killed jobs, resumed shards, corrupt caches, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from workflow_helpers import REPO, load_config, snakemake, write_config

from featreg.evaluation.metrics_table import MEASURED_COLUMNS

pytestmark = pytest.mark.slow


def metrics_without_timing(workdir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(workdir / f"reports/{name}/metrics.csv").drop(columns=list(MEASURED_COLUMNS))


def slow_config(workdir: Path) -> Path:
    """The test config with one NCC shard of three pairs registered one at a time."""
    config = load_config("test.yaml")
    config["name"] = "faults"
    config["compute"].update(shard_size=3, batch_size=1)
    config["registration"]["iterations"] = 400
    config["grid"]["encoders"] = []
    config["methods"].pop("elastix")
    config["figures"]["feature_encoders"] = []
    return write_config(workdir / "config/faults.yaml", config)


def test_killed_registration_job_resumes_without_redoing_finished_pairs(workdir: Path):
    config = slow_config(workdir)
    run = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen([*run, "--configfile", str(config), "--cores", "1"], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = workdir / "results/faults/registration/ncc"
    first = results / "patient001" / "run.json"
    deadline = time.monotonic() + 240
    while not first.exists():
        assert proc.poll() is None, "the workflow ended before the registration job could be killed"
        assert time.monotonic() < deadline, "the registration job never finished its first pair"
        time.sleep(0.2)
    jobs = [p for p in psutil.Process(proc.pid).children(recursive=True) if "register" in p.cmdline()]
    assert jobs, "no running registration job found"
    for job in jobs:
        job.kill()
    assert proc.wait(timeout=120) != 0

    manifest = results / "shards" / "s000.json"
    assert not manifest.exists(), "a killed job must not leave its declared output"
    assert json.loads(first.read_text())["status"] == "ok"
    for folder in results.iterdir():
        if folder.name != "shards" and (folder / "run.json").exists():
            assert {p.name for p in folder.iterdir()} >= {"displacement.nii.gz", "warped_label.nii.gz", "loss.csv"}
    done_at = first.stat().st_mtime_ns

    snakemake(workdir, "--configfile", str(config), "--cores", "1")
    assert first.stat().st_mtime_ns == done_at, "a finished pair was registered again"
    log = (workdir / "logs/faults/registration/ncc/s000.log").read_text()
    assert "1 already done" in log
    table = pd.read_csv(workdir / "reports/faults/metrics.csv")
    assert (table["status"] == "ok").all() and len(table) == 2 * 3


def test_corrupt_feature_cache_is_rebuilt(workdir: Path):
    config = load_config("test.yaml")
    config["figures"]["feature_encoders"] = []
    write_config(workdir / "config/cache.yaml", config)
    snakemake(workdir, "--configfile", "config/cache.yaml", "--cores", "2", "--until", "cache_features")
    cached = workdir / "results/test/features/mind/patient002.pt"
    cached.write_bytes(cached.read_bytes()[:100])  # truncated, as by a full disk
    snakemake(workdir, "--configfile", "config/cache.yaml", "--cores", "2")
    # whichever of the encoder's register jobs on that shard reads it first rebuilds it
    logs = [p.read_text() for p in sorted((workdir / "logs/test/registration").glob("mind-*/s000.log"))]
    assert len(logs) == 2 and any("patient002.pt" in log and "rebuilt" in log for log in logs)
    table = pd.read_csv(workdir / "reports/test/metrics.csv")
    assert (table["status"] == "ok").all()


def test_same_config_and_seed_give_identical_metrics(tmp_path: Path):
    import shutil

    tables = []
    for run in ("first", "second"):
        workdir = tmp_path / run
        shutil.copytree(REPO / "config", workdir / "config")
        config = load_config("test.yaml")
        config["figures"]["feature_encoders"] = []
        write_config(workdir / "config/det.yaml", config)
        snakemake(workdir, "--configfile", "config/det.yaml", "--cores", "2")
        tables.append(metrics_without_timing(workdir, "test"))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)

"""Every slice against the middle one: the extra cost, and the NCC baseline's narrower confidence interval.

    python benchmarks/slices.py [--patients 16] [--iterations 300] [--device cpu]

Runs the default config (config/config.yaml: its synthetic cohort, preprocessing and
registration settings) with the NCC baseline only, twice in the same run: with
``preprocess.slices: middle`` (the paper's one pair per patient) and ``all`` (every
slice of the ED heart holding labels in both frames). For each: the wall seconds of
the whole ``snakemake`` run (synthesis, preprocessing, registration, evaluation, up to
metrics.csv), the number of pairs, and the NCC baseline's mean Dice over patients
(each patient's mean over its slices with ``all``) with its 95 % percentile-bootstrap
CI (9999 resamples, seed 0; ``featreg.evaluation.statistics.bootstrap_mean_ci``).
``ratio`` is seconds over the middle run's. Writes reports/benchmarks/slices.csv and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from featreg.evaluation.statistics import bootstrap_mean_ci
from featreg.io import atomic_path
from featreg.evaluation.metrics_table import patient_means, read_metrics

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "reports" / "benchmarks" / "slices.csv"


def baseline_config(slices: str, patients: int, iterations: int, device: str) -> dict:
    """config/config.yaml with the NCC baseline only, ``patients`` synthetic patients and ``slices``."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["name"] = f"slices-{slices}"
    config["dataset"]["synthetic"]["patients"] = patients
    config["preprocess"]["slices"] = slices
    config["compute"]["device"] = device
    config["registration"]["iterations"] = iterations
    config["methods"] = {config["baseline"]: config["methods"][config["baseline"]]}  # elastix and the rest off
    config["grid"]["encoders"] = []
    config.pop("alpha_sweep", None)
    config["figures"]["feature_encoders"] = []
    return config


def run(work: Path, config: dict) -> float:
    """Wall seconds of ``snakemake`` up to metrics.csv on ``config`` in ``work``."""
    path = work / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", f"reports/{config['name']}/metrics.csv", "-s", str(REPO / "Snakefile"),
           "-d", str(work), "--configfile", str(path), "--cores", "2", "--quiet", "rules"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for slices in ("middle", "all"):
            config = baseline_config(slices, args.patients, args.iterations, args.device)
            work = Path(tmp) / slices  # each run makes its own cohort: the same work as a fresh run
            work.mkdir()
            seconds = run(work, config)
            pairs = read_metrics(work / "reports" / config["name"] / "metrics.csv")
            ncc = pairs[pairs["method"] == "ncc"]
            mean, low, high = bootstrap_mean_ci(patient_means(ncc)["dice_mean"])
            rows.append({"slices": slices, "patients": ncc["patient"].nunique(), "pairs": len(ncc),
                         "seconds": round(seconds, 1), "ratio": round(seconds / rows[0]["seconds"], 2) if rows else 1.0,
                         "ncc_dice_mean": round(mean, 4), "ci_low": round(low, 4), "ci_high": round(high, 4),
                         "ci_width": round(high - low, 4)})  # fmt: skip
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.csv) as tmp_csv, tmp_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("| " + " | ".join(rows[0]) + " |\n|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()

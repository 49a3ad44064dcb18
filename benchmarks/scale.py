"""Cohort scale: planning a 10,000-patient x 25-method grid, and sharded jobs against one job per pair.

    python benchmarks/scale.py [--patients 10000] [--shard-size 32] [--iterations 20] [--per-pair 4]

Planning needs no files (synthetic patients are made by the workflow's own jobs), so
``snakemake -n`` runs on the full grid: 10,000 synthetic patients, the NCC baseline
and 6 MIND encoders x {cosine, L1} x {variant 1, variant 2} = 25 methods. The job
count of one job per (method, patient) is computed, not planned (its DAG would take
minutes to build); its planning time is extrapolated from the per-job cost measured
here. Throughput needs only a sample: one shard of ``--shard-size`` patients is made
with ``featreg synth --ids`` (the cheap path: a 10,000-patient cohort is never
written), and each stage runs as the workflow runs it, one ``featreg`` process per
job: once for the shard, and once per pair for ``--per-pair`` of its patients. The
ratio is seconds per pair of one job per pair over that of the shard job, measured
in the same run on CPU with few iterations (a start-up cost of seconds matters
most next to short jobs). Writes reports/benchmarks/scale.csv and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from featreg.data.nifti import atomic_path
from featreg.experiment import Method, shard_patients

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "reports" / "benchmarks" / "scale.csv"
FEATREG = str(Path(sys.executable).parent / "featreg")
ENCODERS = {f"mind{g}": {"kind": "mind", "grid": g} for g in (32, 40, 48, 56, 64, 72)}


def grid_config(patients: int, shard_size: int, iterations: int) -> dict:
    """The benchmark's experiment: ``patients`` synthetic patients x 25 methods (NCC + 6 encoders x 4)."""
    return {
        "name": "scale",
        "dataset": {"kind": "synthetic", "root": "cohort", "split": "all", "synthetic": {"patients": patients, "seed": 0}},
        "compute": {"device": "cpu", "shard_size": shard_size, "batch_size": shard_size},
        "registration": {"lattice": [24, 24], "iterations": iterations, "lr": 0.002},
        "encoders": ENCODERS,
        "baseline": "ncc",
        "methods": {"ncc": {"alpha": 0}},
        "grid": {"encoders": list(ENCODERS), "distances": ["cosine", "l1"], "variants": ["feature", "combined"]},
        "figures": {"feature_encoders": []},
    }


def plan(workdir: Path, config: dict) -> tuple[float, dict[str, int]]:
    """Wall seconds of ``snakemake -n`` on ``config`` and its jobs per rule."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "-n", "--quiet", "rules"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=True)
    seconds = time.perf_counter() - started
    block = proc.stdout.split("Job stats:", 1)[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.MULTILINE)}
    return seconds, jobs


def per_pair_jobs(patients: int, methods: int, encoders: int) -> int:
    """Jobs of one job per (stage, patient): synth, preprocess, features, register, evaluate (+ initial)."""
    return patients * (2 + encoders + methods + methods + 1)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def stage_commands(work: Path, config: dict) -> dict[str, callable]:
    """Per stage, a function (patients, job tag) -> the ``featreg`` command of one job over those patients."""
    ncc = Method("ncc", settings=config["registration"]).to_json()
    mind = Method("mind32-cosine-v1", 1.0, "mind32", "cosine", config["registration"]).to_json()
    (work / "encoders.yaml").write_text(yaml.safe_dump({"mind32": ENCODERS["mind32"]}))
    cohort, pairs = str(work / "cohort"), work / "pairs"

    def dirs(patients):
        return [str(pairs / p) for p in patients]

    def register(method):
        def command(patients, tag):
            extra = ["--encoders", str(work / "encoders.yaml"), "--features", str(work / "sharded0/features.json")] if "mind" in method else []
            return [FEATREG, "register", "--method-json", method, *extra, "--pairs", *dirs(patients), "--device", "cpu",
                    "--out-dir", str(work / tag / "results"), "--manifest", str(work / tag / "register.json"),
                    "--batch-size", str(len(patients))]  # fmt: skip

        return command

    return {
        "synthesize": lambda patients, tag: [FEATREG, "synth", "--out", cohort, "--ids", *patients, "--manifest", str(work / tag / "synth.json")],
        "preprocess": lambda patients, tag: [FEATREG, "preprocess", "--root", cohort, "--out", str(pairs), "--patients", *patients, "--manifest", str(work / tag / "pre.json")],
        "features": lambda patients, tag: [FEATREG, "features", "--encoders", str(work / "encoders.yaml"), "--encoder", "mind32", "--pairs", *dirs(patients),
                                           "--out", *[str(work / "features" / f"{p}.pt") for p in patients], "--manifest", str(work / tag / "features.json"), "--device", "cpu"],
        "register ncc": register(ncc),
        "register mind32-cosine-v1": register(mind),
    }  # fmt: skip


def throughput(work: Path, config: dict, shard: list[str], per_pair: int) -> list[dict]:
    """Seconds per pair of each stage: one job for the shard, then one job per pair for a sample."""
    made = {  # what a stage makes for a patient; removed before the per-pair jobs, which skip done patients
        "synthesize": lambda p: work / "cohort/database/training" / p,
        "preprocess": lambda p: work / "pairs" / p,
        "features": lambda p: work / "features" / f"{p}.pt",
    }
    rows = []
    for stage, command in stage_commands(work, config).items():
        for layout, jobs in (("sharded", [shard]), ("per_pair", [[p] for p in shard[:per_pair]])):
            for index in range(len(jobs)):
                (work / f"{layout}{index}").mkdir(exist_ok=True)
            if layout == "per_pair" and stage in made:
                for patient in shard[:per_pair]:
                    path = made[stage](patient)
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            seconds = sum(timed(command(patients, f"{layout}{i}")) for i, patients in enumerate(jobs))
            pairs = sum(map(len, jobs))
            rows.append({"stage": stage, "layout": layout, "jobs": len(jobs), "pairs": pairs,
                         "seconds": round(seconds, 2), "seconds_per_pair": round(seconds / pairs, 3)})  # fmt: skip
            print(f"{stage:28s} {layout:9s} {pairs:3d} pairs {seconds:7.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20, help="registration iterations in the throughput runs")
    parser.add_argument("--per-pair", type=int, default=4, help="pairs of the sample run as one job each")
    args = parser.parse_args()

    config = grid_config(args.patients, args.shard_size, args.iterations)
    methods = len(ENCODERS) * 4 + 1
    with tempfile.TemporaryDirectory(prefix="featreg-scale-") as tmp:
        work = Path(tmp)
        (work / "plan").mkdir()
        plan_seconds, jobs = plan(work / "plan", config)
        total = jobs.pop("total")
        print(f"planned {total} jobs in {plan_seconds:.1f} s: {jobs}", flush=True)
        flat = per_pair_jobs(args.patients, methods, len(ENCODERS))
        shard = shard_patients([f"patient{k:03d}" for k in range(1, args.shard_size + 1)], args.shard_size)["s000"]
        stages = throughput(work, config, shard, args.per_pair)

    per_job_ms = 1000 * plan_seconds / total
    rows = [
        {"stage": "plan", "layout": "sharded", "jobs": total, "pairs": args.patients * methods,
         "seconds": round(plan_seconds, 1), "seconds_per_pair": "", "ratio": 1.0},
        {"stage": "plan (extrapolated)", "layout": "per_pair", "jobs": flat, "pairs": args.patients * methods,
         "seconds": round(per_job_ms * flat / 1000, 1), "seconds_per_pair": "", "ratio": round(flat / total, 1)},
    ]  # fmt: skip
    for row in stages:
        sharded = next(r for r in stages if r["stage"] == row["stage"] and r["layout"] == "sharded")
        rows.append(row | {"ratio": round(row["seconds_per_pair"] / sharded["seconds_per_pair"], 2)})
    common = {"patients": args.patients, "methods": methods, "shard_size": args.shard_size, "iterations": args.iterations, "device": "cpu"}
    fields = ["stage", "layout", "jobs", "pairs", "seconds", "seconds_per_pair", "ratio", *common]
    CSV_PATH.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(CSV_PATH) as tmp_csv, open(tmp_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(row | common for row in rows)
    print(f"\nwrote {CSV_PATH}\n")
    print("| stage | layout | jobs | seconds | s / pair | x sharded |\n| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['stage']} | {row['layout']} | {row['jobs']} | {row['seconds']} | {row['seconds_per_pair']} | {row['ratio']} |")


if __name__ == "__main__":
    main()

"""Cohort scale: planning a 10,000-patient x 25-method grid, and sharded jobs against one job per pair.

    python benchmarks/scale.py [--patients 10000] [--shard-size 32] [--iterations 20] [--per-pair 4] [--device cpu]
    python benchmarks/scale.py --throughput-encoders dinov2-random sam-random mind --device cuda \
        --shard-size 8 --batch-size 4 --iterations 50 --project   # on a GPU machine

Planning needs no files (synthetic patients are made by the workflow's own jobs), so
``snakemake -n`` runs on the full grid: 10,000 synthetic patients, the NCC baseline
and 6 MIND encoders x {cosine, L1} x {variant 1, variant 2} = 25 methods, once with
``preprocess.slices: middle`` and once with ``all`` (shards stay groups of patients,
so both plan the same jobs; the benchmark fails if they do not). Beside them, in the
same run, Snakemake's own cost: ``snakemake -n`` of a bare Snakefile (one rule, a
``touch`` per job, no input functions, params, logs or resources) with as many jobs,
so that what the workflow adds per job is the difference. The job count of one job
per (method, patient) is computed, not planned (its DAG would take minutes to
build); its planning time is extrapolated from the per-job cost measured here.
Throughput needs only a sample: one shard of ``--shard-size`` patients is made
with ``featreg synth --ids`` (the cheap path: a 10,000-patient cohort is never
written), and each stage runs as the workflow runs it, one ``featreg`` process per
job: once for the shard, and once per pair for ``--per-pair`` of its patients. The
ratio is seconds per pair of one job per pair over that of the shard job, measured
in the same run with few iterations (a start-up cost of seconds matters most next
to short jobs), on ``--device`` (default cpu, so runs stay comparable; ``auto``
is cuda when available). Writes reports/benchmarks/scale.csv and prints a markdown
table. Columns: ``seconds`` is the wall time of the row's jobs (of ``snakemake -n``
for the plan rows), ``seconds_per_pair`` that over its pairs, ``pairs_per_hour``
3600 / seconds_per_pair (pairs per GPU-hour on cuda, per CPU-hour on cpu, at
``iterations``), ``ratio`` seconds per pair over the sharded job's (for the plan
rows: seconds over the ``slices: middle`` plan's, and the per-pair job count over
the sharded one).

Throughput mode (``--throughput-encoders``) measures encoders at their real size
with random weights (DINOv2 ViT-B at 896 px, SAM ViT-B at 1024 px, both 64x64
grids; MIND at 64x64) and the paper's registration settings: one sample shard of
``--shard-size`` pairs has its fixed features cached (``featreg features``) and is
registered (``featreg register``, ``--batch-size`` pairs at a time) with
``--iterations`` iterations. Columns: ``seconds_per_pair_iteration`` is the
optimisation time per pair and iteration (``run.json``'s batch time over pairs x
iterations), ``overhead_per_pair`` the rest of both jobs' wall time per pair
(start-up, feature caching, I/O), ``seconds_per_pair_1500`` their extrapolation to
the paper's 1500 iterations, ``pairs_per_hour`` 3600 over that, and
``peak_memory_mb`` the register job's peak (CUDA allocator on a GPU). It writes
reports/benchmarks/scale_throughput.csv. ``--project`` then prints the projected
device-hours (registrations x seconds_per_pair_1500 / 3600) per encoder for the
paper grid (its registration count from a dry run of config/paper.yaml on an empty
150-patient ACDC tree) and for the ``--patients`` x 25-method grid. Full-size
encoders cost 30-50 s per iteration on a 2-core CPU: run them on a GPU. The whole
batch goes through the encoder at once (about 3 GB per DINOv2 image and 8 GB per
SAM image on CPU), so keep ``--batch-size`` small on one GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from featreg.io import atomic_path
from featreg.experiment.splits import shard_patients
from featreg.experiment.methods import Method
from featreg.devices import resolve_device

REPO = Path(__file__).resolve().parents[1]
CSV_PATH = REPO / "reports" / "benchmarks" / "scale.csv"
THROUGHPUT_CSV = REPO / "reports" / "benchmarks" / "scale_throughput.csv"
PAPER_CONFIG = REPO / "config" / "paper.yaml"
PAPER_ITERATIONS = 1500
FEATREG = str(Path(sys.executable).parent / "featreg")
ENCODERS = {f"mind{g}": {"kind": "mind", "grid": g} for g in (32, 40, 48, 56, 64, 72)}
# Full-size encoders as the paper runs them, with random weights (the cost does not depend on them).
THROUGHPUT_ENCODERS = {
    "dinov2-random": {"kind": "dinov2", "input_size": 896, "grid": 64, "random_init": True},
    "sam-random": {"kind": "sam", "input_size": 1024, "grid": 64, "random_init": True},
    "mind": {"kind": "mind", "grid": 64},
}


def grid_config(patients: int, shard_size: int, iterations: int, device: str) -> dict:
    """The benchmark's experiment: ``patients`` synthetic patients x 25 methods (NCC + 6 encoders x 4)."""
    return {
        "name": "scale",
        "dataset": {"kind": "synthetic", "root": "cohort", "split": "all", "synthetic": {"patients": patients, "seed": 0}},
        "compute": {"device": device, "shard_size": shard_size, "batch_size": shard_size},
        "registration": {"lattice": [24, 24], "iterations": iterations, "lr": 0.002},
        "encoders": ENCODERS,
        "baseline": "ncc",
        "methods": {"ncc": {"alpha": 0}},
        "grid": {"encoders": list(ENCODERS), "distances": ["cosine", "l1"], "variants": ["feature", "combined"]},
        "figures": {"feature_encoders": []},
    }


def dry_run(workdir: Path, config: dict, snakefile: Path = REPO / "Snakefile") -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of ``snakemake -n`` of ``snakefile`` on ``config`` in ``workdir``, and the finished process."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "-n", "--quiet", "rules"]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=True)
    return time.perf_counter() - started, proc


def job_stats(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule (and ``total``) from the job stats a dry run prints."""
    block = proc.stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", block, re.MULTILINE)}


def plan(workdir: Path, config: dict, snakefile: Path = REPO / "Snakefile") -> tuple[float, dict[str, int]]:
    """Wall seconds of ``snakemake -n`` of ``snakefile`` on ``config`` and its jobs per rule."""
    seconds, proc = dry_run(workdir, config, snakefile)
    return seconds, job_stats(proc)


BARE_SNAKEFILE = """\
rule all:
    input: expand("out/{index}.txt", index=range(int(config["jobs"])))

rule touch:
    output: "out/{index}.txt"
    shell: "touch {output}"
"""


def bare_plan(workdir: Path, jobs: int) -> float:
    """Wall seconds of ``snakemake -n`` on a bare Snakefile of ``jobs`` jobs (``all`` included): Snakemake's own cost."""
    snakefile = workdir / "Snakefile"
    snakefile.write_text(BARE_SNAKEFILE)
    seconds, planned = plan(workdir, {"jobs": jobs - 1}, snakefile)
    if planned["total"] != jobs:
        raise RuntimeError(f"the bare Snakefile planned {planned['total']} jobs, not {jobs}")
    return seconds


def paper_registrations(workdir: Path) -> int:
    """Registrations of config/paper.yaml's grid (tuning included), from the workflow's log of a dry run.

    The ACDC tree is 150 empty patient folders and the MedSAM checkpoint an empty
    file, as in the workflow test that plans the paper grid: planning reads neither.
    """
    root = workdir / "acdc"
    for number in range(1, 151):
        (root / "database" / ("training" if number <= 100 else "testing") / f"patient{number:03d}").mkdir(parents=True)
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    config["dataset"]["root"] = str(root)
    medsam = workdir / "resources/checkpoints/medsam_vit_b.pth"
    medsam.parent.mkdir(parents=True)
    medsam.touch()
    _, proc = dry_run(workdir, config)
    found = re.search(r"(\d+) registrations \(", proc.stdout + proc.stderr)
    if found is None:
        raise RuntimeError(f"the dry run of {PAPER_CONFIG} logged no registration count:\n{proc.stderr[-3000:]}")
    return int(found.group(1))


def per_pair_jobs(patients: int, methods: int, encoders: int) -> int:
    """Jobs of one job per (stage, patient): synth, preprocess, features, register, evaluate (+ initial)."""
    return patients * (2 + encoders + methods + methods + 1)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def stage_commands(work: Path, config: dict, device: str) -> dict[str, callable]:
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
            method_file = work / tag / "method.json"
            method_file.parent.mkdir(parents=True, exist_ok=True)
            method_file.write_text(method)
            return [FEATREG, "register", "--method-file", str(method_file), *extra, "--pairs", *dirs(patients), "--device", device,
                    "--out-dir", str(work / tag / "results"), "--manifest", str(work / tag / "register.json"),
                    "--batch-size", str(len(patients))]  # fmt: skip

        return command

    return {
        "synthesize": lambda patients, tag: [FEATREG, "synth", "--out", cohort, "--ids", *patients, "--manifest", str(work / tag / "synth.json")],
        "preprocess": lambda patients, tag: [FEATREG, "preprocess", "--root", cohort, "--out", str(pairs), "--patients", *patients, "--manifest", str(work / tag / "pre.json"),
                                             "--metrics", str(work / tag / "initial.csv")],
        "features": lambda patients, tag: [FEATREG, "features", "--encoders", str(work / "encoders.yaml"), "--encoder", "mind32", "--pairs", *dirs(patients),
                                           "--out-dir", str(work / "features"), "--manifest", str(work / tag / "features.json"), "--device", device],
        "register ncc": register(ncc),
        "register mind32-cosine-v1": register(mind),
    }  # fmt: skip


def throughput(work: Path, config: dict, shard: list[str], per_pair: int, device: str) -> list[dict]:
    """Seconds per pair of each stage: one job for the shard, then one job per pair for a sample."""
    made = {  # what a stage makes for a patient; removed before the per-pair jobs, which skip done patients
        "synthesize": lambda p: work / "cohort/database/training" / p,
        "preprocess": lambda p: work / "pairs" / p,
        "features": lambda p: work / "features" / f"{p}.pt",
    }
    rows = []
    for stage, command in stage_commands(work, config, device).items():
        for layout, jobs in (("sharded", [shard]), ("per_pair", [[p] for p in shard[:per_pair]])):
            for index in range(len(jobs)):
                (work / f"{layout}{index}").mkdir(exist_ok=True)
            if layout == "per_pair" and stage in made:
                for patient in shard[:per_pair]:
                    path = made[stage](patient)
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            seconds = sum(timed(command(patients, f"{layout}{i}")) for i, patients in enumerate(jobs))
            pairs = sum(map(len, jobs))
            rows.append({"stage": stage, "layout": layout, "jobs": len(jobs), "pairs": pairs, "seconds": round(seconds, 2),
                         "seconds_per_pair": round(seconds / pairs, 3), "pairs_per_hour": round(3600 * pairs / seconds, 1)})  # fmt: skip
            print(f"{stage:28s} {layout:9s} {pairs:3d} pairs {seconds:7.2f} s", flush=True)
    return rows


def encoder_throughput(work: Path, name: str, shard: list[str], settings: dict, device: str, batch_size: int) -> dict:
    """Cost of one shard registered with ``name`` (feature-only, cosine): feature caching + registration."""
    encoders, tag, pairs = str(work / "throughput-encoders.yaml"), work / name, [str(work / "pairs" / p) for p in shard]
    tag.mkdir()
    features = [FEATREG, "features", "--encoders", encoders, "--encoder", name, "--pairs", *pairs, "--device", device,
                "--out-dir", str(tag / "features"), "--manifest", str(tag / "features.json")]
    method = tag / "method.json"
    method.write_text(Method(f"{name}-cosine-v1", 1.0, name, "cosine", settings).to_json())
    register = [FEATREG, "register", "--method-file", str(method), "--encoders", encoders, "--features", str(tag / "features.json"),
                "--pairs", *pairs, "--device", device, "--out-dir", str(tag / "results"), "--manifest", str(tag / "register.json"),
                "--batch-size", str(batch_size)]  # fmt: skip
    seconds = timed(features) + timed(register)
    runs = {p: json.loads((tag / "results" / p / "run.json").read_text()) for p in shard}
    failed = {p: run["reason"] for p, run in runs.items() if run["status"] != "ok"}
    if failed:
        raise RuntimeError(f"{name}: registration failed for {failed}")
    optimise = sum(run["seconds"] for run in runs.values())  # each pair's share of its batch: sums to the batches' time
    per_iteration = optimise / sum(run["iterations"] for run in runs.values())
    overhead = (seconds - optimise) / len(shard)
    at_paper = overhead + PAPER_ITERATIONS * per_iteration
    print(f"{name:14s} {len(shard):3d} pairs {seconds:8.2f} s, {per_iteration:.4f} s / pair / iteration", flush=True)
    return {"encoder": name, "pairs": len(shard), "batch_size": batch_size, "seconds": round(seconds, 2),
            "seconds_per_pair_iteration": round(per_iteration, 5), "overhead_per_pair": round(overhead, 3),
            "seconds_per_pair_1500": round(at_paper, 2), "pairs_per_hour": round(3600 / at_paper, 2),
            "peak_memory_mb": round(max(run["peak_memory_mb"] for run in runs.values()))}  # fmt: skip


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp_csv, open(tmp_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {path}\n")


def run_throughput(args: argparse.Namespace, device: str, work: Path) -> None:
    """Throughput mode: each chosen encoder at full size on one sample shard, and optionally the projection."""
    config = grid_config(args.shard_size, args.shard_size, args.iterations, device)
    shard = [f"patient{k:03d}" for k in range(1, args.shard_size + 1)]
    commands = stage_commands(work, config, device)
    (work / "sample").mkdir()
    timed(commands["synthesize"](shard, "sample"))
    timed(commands["preprocess"](shard, "sample"))
    names = list(dict.fromkeys(args.throughput_encoders))
    (work / "throughput-encoders.yaml").write_text(yaml.safe_dump({n: THROUGHPUT_ENCODERS[n] for n in names}))
    settings = yaml.safe_load(PAPER_CONFIG.read_text())["registration"] | {"iterations": args.iterations}
    common = {"iterations": args.iterations, "device": device}
    rows = [encoder_throughput(work, n, shard, settings, device, args.batch_size or args.shard_size) | common for n in names]
    write_csv(args.csv or THROUGHPUT_CSV, rows)
    print(f"| encoder | s / pair / it | s / pair (1500 it) | pairs / {device}-hour | peak MB |\n| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['encoder']} | {row['seconds_per_pair_iteration']} | {row['seconds_per_pair_1500']} "
              f"| {row['pairs_per_hour']} | {row['peak_memory_mb']} |")  # fmt: skip
    if not args.project:
        return
    (work / "paper").mkdir()
    grids = {"paper grid (config/paper.yaml)": paper_registrations(work / "paper"),
             f"{args.patients} patients x 25 methods": args.patients * (len(ENCODERS) * 4 + 1)}  # fmt: skip
    print(f"\nprojected {device}-hours at 1500 iterations, if every registration cost as much as the encoder's:\n")
    print("| grid | registrations | " + " | ".join(r["encoder"] for r in rows) + " |")
    print("| --- | ---: |" + " ---: |" * len(rows))
    for grid, count in grids.items():
        hours = " | ".join(f"{count * r['seconds_per_pair_1500'] / 3600:,.1f}" for r in rows)
        print(f"| {grid} | {count} | {hours} |")


def run_scale(args: argparse.Namespace, device: str, work: Path) -> None:
    """The default mode: planning the grid, and sharded jobs against one job per pair."""
    config = grid_config(args.patients, args.shard_size, args.iterations, device)
    methods = len(ENCODERS) * 4 + 1
    (work / "plan").mkdir()
    plan_seconds, jobs = plan(work / "plan", config)
    total = jobs.pop("total")
    print(f"planned {total} jobs in {plan_seconds:.1f} s: {jobs}", flush=True)
    # Every slice a pair: shards stay groups of patients, so the DAG is the same size.
    (work / "plan-all").mkdir()
    all_seconds, all_jobs = plan(work / "plan-all", config | {"preprocess": {"slices": "all"}})
    print(f"slices: all planned {all_jobs['total']} jobs in {all_seconds:.1f} s", flush=True)
    if all_jobs["total"] != total:
        raise RuntimeError(f"slices: all planned {all_jobs['total']} jobs, slices: middle {total}: shards must not grow with slices")
    (work / "plan-bare").mkdir()
    bare_seconds = bare_plan(work / "plan-bare", total)
    print(f"a bare Snakefile of {total} jobs planned in {bare_seconds:.1f} s", flush=True)
    flat = per_pair_jobs(args.patients, methods, len(ENCODERS))
    shard = shard_patients([f"patient{k:03d}" for k in range(1, args.shard_size + 1)], args.shard_size)["s000"]
    stages = throughput(work, config, shard, args.per_pair, device)

    per_job_ms = 1000 * plan_seconds / total
    rows = [
        {"stage": "plan", "layout": "sharded", "jobs": total, "pairs": args.patients * methods,
         "seconds": round(plan_seconds, 1), "seconds_per_pair": "", "pairs_per_hour": "", "ratio": 1.0},
        {"stage": "plan (slices: all)", "layout": "sharded", "jobs": all_jobs["total"], "pairs": "",
         "seconds": round(all_seconds, 1), "seconds_per_pair": "", "pairs_per_hour": "",
         "ratio": round(all_seconds / plan_seconds, 2)},
        {"stage": "plan (bare Snakefile)", "layout": "sharded", "jobs": total, "pairs": "",
         "seconds": round(bare_seconds, 1), "seconds_per_pair": "", "pairs_per_hour": "",
         "ratio": round(bare_seconds / plan_seconds, 2)},
        {"stage": "plan (extrapolated)", "layout": "per_pair", "jobs": flat, "pairs": args.patients * methods,
         "seconds": round(per_job_ms * flat / 1000, 1), "seconds_per_pair": "", "pairs_per_hour": "", "ratio": round(flat / total, 1)},
    ]  # fmt: skip
    for row in stages:
        sharded = next(r for r in stages if r["stage"] == row["stage"] and r["layout"] == "sharded")
        rows.append(row | {"ratio": round(row["seconds_per_pair"] / sharded["seconds_per_pair"], 2)})
    common = {"patients": args.patients, "methods": methods, "shard_size": args.shard_size, "iterations": args.iterations, "device": device}
    write_csv(args.csv or CSV_PATH, [row | common for row in rows])
    print("| stage | layout | jobs | seconds | s / pair | pairs / hour | x sharded |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['stage']} | {row['layout']} | {row['jobs']} | {row['seconds']} | {row['seconds_per_pair']} "
              f"| {row['pairs_per_hour']} | {row['ratio']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20, help="registration iterations in the throughput runs")
    parser.add_argument("--per-pair", type=int, default=4, help="pairs of the sample run as one job each")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="device of every featreg job (default cpu)")
    parser.add_argument("--throughput-encoders", nargs="+", choices=list(THROUGHPUT_ENCODERS), metavar="ENCODER",
                        help=f"throughput mode: measure these full-size encoders ({', '.join(THROUGHPUT_ENCODERS)})")
    parser.add_argument("--batch-size", type=int, help="throughput mode: pairs registered jointly (default: the shard size)")
    parser.add_argument("--project", action="store_true", help="throughput mode: print projected device-hours of the grids")
    parser.add_argument("--csv", type=Path, help=f"output table (default {CSV_PATH.name}, or {THROUGHPUT_CSV.name} in throughput mode)")
    args = parser.parse_args()  # fmt: skip
    if not args.throughput_encoders and (args.project or args.batch_size):
        parser.error("--project and --batch-size belong to throughput mode (--throughput-encoders)")
    for key in ("patients", "shard_size", "iterations", "per_pair", "batch_size"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1, got {getattr(args, key)}")
    try:
        device = str(resolve_device(args.device))
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="featreg-scale-") as tmp:
        (run_throughput if args.throughput_encoders else run_scale)(args, device, Path(tmp))


if __name__ == "__main__":
    main()

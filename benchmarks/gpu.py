"""GPU budget of the full-size encoders: speed, memory, achieved FLOP/s and the paper grid's GPU-hours.

    python benchmarks/gpu.py --device cuda --compile      # one H100/H200: a few minutes
    python benchmarks/gpu.py --device cpu --tiny          # CI-size smoke run of the same code

Random-weight DINOv2 ViT-B/14 (reg4) at 896 px and SAM ViT-B at 1024 px (both
64 × 64 feature grids; ``--tiny``: two-block models at 112 / 128 px), with the
paper's registration settings (``config/paper.yaml``: order-1 diffeomorphic
B-spline, airlab diffusion, λ 120, lr 5e-4) as feature-only cosine methods
(variant 1, α = 1), and the NCC baseline, register one shard of ``--pairs``
synthetic pairs (the workflow's own synthesis and preprocessing) for
``--iterations`` iterations, in float32 and bf16 autocast, at batch 1 and at the
batch ``compute.batch_size: auto`` picks (capped by the shard), after one
untimed warm-up run (2 iterations, or ``--iterations`` if fewer). Columns:

- ``ms_per_pair_iteration``: ``register_pairs``' wall time (fixed features
  given, so the loop and the final warp) over iterations × pairs;
- ``peak_memory_mb``: that run's peak (CUDA allocator; CPU: peak RSS of the process);
- ``gflop_per_pair_iteration``: one iteration of one pair (objective forward and
  backward: encoder, warp, distances, regulariser), counted by
  ``torch.utils.flop_counter`` with the math attention kernel (which it counts
  on every device); ``tflops`` that over the time per pair-iteration, and
  ``fraction_of_bf16_peak`` over the device's dense bf16 peak (``--peak-tflops``,
  or a table of known GPUs; empty on CPU);
- ``pairs_per_hour``: 3600 / (1500 iterations × time per pair-iteration), the
  paper's iterations, start-up and I/O excluded;
- ``paper_registrations`` and ``paper_hours``: the registrations of
  ``config/paper.yaml`` (tuning included) that use this row's encoder, counted by
  :func:`featreg.experiment.plan.registrations_per_encoder` (the planning functions
  the workflow runs; its dry run logs the total, 4830, the `-once` rows costed as every-iteration ones), and their hours at this
  row's speed. ``dinov2-noup`` (126 px) is costed as DINOv2, an upper bound.
- ``compile_s`` (``--compile``, bf16 at batch auto): the extra time of the fixed
  features and the warm-up when the backbone is ``torch.compile``-d; the row's
  speed is the compiled one.

bf16 against float32 (same pairs, batch auto, ``--iterations``): mean Dice of
each and the mean over pairs of |ΔDice|, and the largest and mean |Δu| of the
final fields in mm. Writes reports/benchmarks/gpu.csv (``--tiny``: gpu_tiny.csv)
and gpu_bf16.csv beside it, and prints both as markdown with the projected
GPU-hours of the paper grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from snakemake.utils import validate
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from featreg.data.acdc import patient_id
from featreg.data.pairs import Pair, load_pair
from featreg.data.preprocess import PreprocessOptions
from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.evaluation.metrics import dice_per_class
from featreg.experiment.plan import registrations_per_encoder
from featreg.io import atomic_path
from featreg.registration.batching import auto_batch_size
from featreg.registration.io import warp_label_mm
from featreg.registration.optimize import pair_objective, register_pairs, transform_for
from featreg.devices import resolve_device
from featreg.registration.regularisers import regulariser_weights
from featreg.registration.settings import RegistrationSettings
from featreg.jobs.data import preprocess_shard, synthesize_shard

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config" / "paper.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OUT_DIR = REPO / "reports" / "benchmarks"
PAPER_ITERATIONS = 1500
ACDC_PATIENTS = 150
ENCODERS = {
    "dinov2": {"kind": "dinov2", "input_size": 896, "grid": 64, "random_init": True},
    "sam": {"kind": "sam", "input_size": 1024, "grid": 64, "random_init": True},
}
TINY_ENCODERS = {
    "dinov2": {"kind": "dinov2", "input_size": 112, "grid": 16, "random_init": True,
               "arch": {"embed_dim": 96, "depth": 2, "num_heads": 3}},
    "sam": {"kind": "sam", "input_size": 128, "grid": 16, "random_init": True,
            "arch": {"embed_dim": 96, "depth": 2, "num_heads": 3, "window_size": 4, "global_attn_indexes": [1]}},
}  # fmt: skip
# The paper grid's encoders, costed as the benchmark encoder of the same family.
COSTED_AS = {"dinov2": "dinov2", "dinov2-noup": "dinov2", "sam": "sam", "medsam": "sam", None: "ncc"}
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device name; the first match wins.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.1}


def synthetic_shard(work: Path, count: int) -> list[Pair]:
    """``count`` synthetic patients, synthesised and preprocessed as the workflow does, loaded as pairs."""
    patients = [patient_id(k) for k in range(1, count + 1)]
    synthesize_shard(work / "acdc", patients, work / "synth.json", seed=0)
    preprocess_shard(work / "acdc", patients, work / "pairs", work / "pairs.json", PreprocessOptions())
    return [load_pair(work / "pairs" / p) for p in patients]


def paper_settings(iterations: int, alpha: float) -> RegistrationSettings:
    registration = yaml.safe_load(PAPER_CONFIG.read_text())["registration"]
    extra = {"alpha": alpha, "feature_distance": "cosine"} if alpha > 0 else {}
    return RegistrationSettings.from_dict(registration | {"iterations": iterations} | extra)


def paper_registrations() -> dict[str, int]:
    """Registrations of config/paper.yaml on ACDC's 150 patients, per benchmark encoder (ncc: intensity only)."""
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    validate(config, str(SCHEMA))  # fills the schema's defaults, as the workflow does
    counts: dict[str, int] = {}
    for encoder, count in registrations_per_encoder(config, [patient_id(k) for k in range(1, ACDC_PATIENTS + 1)]).items():
        counts[COSTED_AS[encoder]] = counts.get(COSTED_AS[encoder], 0) + count
    return counts


def bf16_peak(device: torch.device, override: float | None) -> float | None:
    if override is not None or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def stack(pairs: list[Pair], attribute: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([getattr(p, attribute) for p in pairs])[:, None])


def flop_per_pair_iteration(pair: Pair, settings: RegistrationSettings, encoder, device: torch.device) -> int:
    """FLOPs of one objective evaluation and its backward for one pair (math attention, so every device counts it)."""
    fixed, moving = stack([pair], "fixed").to(device), stack([pair], "moving").to(device)
    transform = transform_for(settings, pair.fixed.shape, device=device)
    params = transform.zeros(1).requires_grad_(True)
    weights = regulariser_weights(settings.regulariser, pair.fixed.shape, pair.spacing).to(params.dtype).to(device)
    features = None
    if encoder is not None:
        with torch.no_grad():
            features = encoder(fixed)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        total, *_ = pair_objective(transform, params, fixed, moving, settings, weights, encoder=encoder, fixed_features=features)
        total.sum().backward()
    return counter.get_total_flops()


def timed_run(pairs: list[Pair], settings: RegistrationSettings, encoder, device: torch.device):
    """Fixed features and a warm-up of at most 2 iterations, then the timed run; returns (result, seconds before it).

    The seconds before the timed run include compiling a compiled encoder (without and with gradients).
    """
    fixed, moving = stack(pairs, "fixed"), stack(pairs, "moving")
    started = time.perf_counter()
    features = None
    if encoder is not None:
        with torch.no_grad():
            features = encoder(fixed.to(device))
    common = dict(spacing=pairs[0].spacing, encoder=encoder, fixed_features=features, device=device, progress_every_s=None)
    register_pairs(fixed, moving, dataclasses.replace(settings, iterations=min(2, settings.iterations)), **common)
    warmup = time.perf_counter() - started
    return register_pairs(fixed, moving, settings, **common), warmup


def dice_mean(pair: Pair, displacement_mm: np.ndarray) -> float:
    return dice_per_class(warp_label_mm(pair.moving_label, displacement_mm, pair.spacing), pair.fixed_label)["mean"]


def measure(args: argparse.Namespace, device: torch.device, pairs: list[Pair]) -> tuple[list[dict], list[dict]]:
    """The rows of gpu.csv and gpu_bf16.csv."""
    counts = paper_registrations()
    peak = bf16_peak(device, args.peak_tflops)
    rows, accuracy = [], []
    encoders = TINY_ENCODERS if args.tiny else ENCODERS
    for name in ["ncc", *encoders]:
        settings = paper_settings(args.iterations, alpha=0.0 if name == "ncc" else 1.0)
        dtypes = ["float32"] if name == "ncc" else ["float32", "bf16"]
        fields = {}
        for dtype in dtypes:
            encoder = None if name == "ncc" else build_encoder(EncoderSpec.from_dict(name, encoders[name] | {"dtype": dtype}), str(device))
            flop = flop_per_pair_iteration(pairs[0], settings, encoder, device)
            sample = pairs[0]
            auto, _ = auto_batch_size(sample.fixed[None, None], sample.moving[None, None], settings, spacing=sample.spacing,
                                      encoder=encoder, device=device, limit=len(pairs))  # fmt: skip
            variants = [(1, False), (auto, False)] + ([(auto, True)] if args.compile and dtype == "bf16" else [])
            uncompiled_warmup = None
            for batch, compiled in variants:
                if compiled:
                    encoder.backbone.compile()
                result, warmup = timed_run(pairs[:batch], settings, encoder, device)
                if batch == auto and not compiled:
                    uncompiled_warmup = warmup
                    fields[dtype] = result.displacement_mm
                seconds = result.seconds / (settings.iterations * batch)
                tflops = flop / seconds / 1e12
                row = {
                    "encoder": name, "dtype": dtype, "compiled": compiled, "batch": batch, "batch_is_auto": batch == auto,
                    "ms_per_pair_iteration": round(1000 * seconds, 3), "peak_memory_mb": round(result.peak_memory_mb),
                    "gflop_per_pair_iteration": float(f"{flop / 1e9:.4g}"), "tflops": float(f"{tflops:.4g}"),
                    "fraction_of_bf16_peak": float(f"{tflops / peak:.3g}") if peak else "",
                    "pairs_per_hour": round(3600 / (PAPER_ITERATIONS * seconds), 1),
                    "paper_registrations": counts.get(name, 0),
                    "paper_hours": round(counts.get(name, 0) * PAPER_ITERATIONS * seconds / 3600, 3),
                    "compile_s": round(warmup - uncompiled_warmup, 1) if compiled else "",
                    "iterations": settings.iterations, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                }  # fmt: skip
                rows.append(row)
                print(f"{name:7s} {dtype:8s} batch {batch:3d}{' compiled' if compiled else ''}: "
                      f"{row['ms_per_pair_iteration']} ms / pair / it, {row['peak_memory_mb']} MB, {row['tflops']} TFLOP/s", flush=True)  # fmt: skip
            del encoder
        if len(fields) == 2:
            batch = len(fields["float32"])
            dice = {dtype: np.array([dice_mean(p, u) for p, u in zip(pairs[:batch], field)]) for dtype, field in fields.items()}
            delta = np.abs(fields["bf16"] - fields["float32"])
            accuracy.append({
                "encoder": name, "pairs": batch, "iterations": settings.iterations,
                "dice_float32": round(float(dice["float32"].mean()), 4), "dice_bf16": round(float(dice["bf16"].mean()), 4),
                "mean_abs_dice_difference": round(float(np.abs(dice["bf16"] - dice["float32"]).mean()), 5),
                "max_field_difference_mm": round(float(delta.max()), 5), "mean_field_difference_mm": round(float(delta.mean()), 5),
            })  # fmt: skip
    return rows, accuracy


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    print(f"wrote {path}")


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def projection(rows: list[dict]) -> str:
    """Paper-grid hours per dtype: each encoder family at its fastest uncompiled batch in that dtype (NCC in float32)."""
    lines = []
    for dtype in ("float32", "bf16"):
        best = {}
        for row in rows:
            if row["dtype"] in (dtype, "float32" if row["encoder"] == "ncc" else dtype) and not row["compiled"]:
                if row["encoder"] not in best or row["paper_hours"] < best[row["encoder"]]["paper_hours"]:
                    best[row["encoder"]] = row
        hours = sum(r["paper_hours"] for r in best.values())
        count = sum(r["paper_registrations"] for r in best.values())
        parts = ", ".join(f"{e} {r['paper_hours']:.2f} h at batch {r['batch']}" for e, r in best.items())
        lines.append(f"- {dtype}: {hours:.2f} device-hours for {count} registrations ({parts})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--tiny", action="store_true", help="two-block encoders at 112/128 px, 2 pairs, 1 iteration")
    parser.add_argument("--pairs", type=int, help="pairs in the shard (default 16; --tiny 2)")
    parser.add_argument("--iterations", type=int, help="timed iterations (default 50; --tiny 1)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile-d encoder (bf16, batch auto)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: from its name)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    args.pairs = args.pairs or (2 if args.tiny else 16)
    args.iterations = args.iterations or (1 if args.tiny else 50)
    for key in ("pairs", "iterations"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be at least 1, got {getattr(args, key)}")
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="featreg-gpu-") as tmp:
        pairs = synthetic_shard(Path(tmp), args.pairs)
        rows, accuracy = measure(args, device, pairs)
    name = "gpu_tiny" if args.tiny else "gpu"
    write_csv(args.out_dir / f"{name}.csv", rows)
    write_csv(args.out_dir / f"{name}_bf16.csv", accuracy)
    print(markdown(rows, ["encoder", "dtype", "compiled", "batch", "ms_per_pair_iteration", "peak_memory_mb", "tflops",
                          "fraction_of_bf16_peak", "pairs_per_hour", "paper_hours", "compile_s"]))  # fmt: skip
    print("\nbf16 against float32 (same pairs, batch auto):\n")
    print(markdown(accuracy, list(accuracy[0])))
    print(f"\nprojected device-hours of config/paper.yaml at {PAPER_ITERATIONS} iterations:\n{projection(rows)}")


if __name__ == "__main__":
    main()

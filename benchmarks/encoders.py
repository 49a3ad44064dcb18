"""Seconds per forward+backward (to the image) and peak memory of each encoder at its real resolution.

Each encoder runs in its own process so that peak memory (CPU: max RSS; CUDA:
max allocated) is its own. Random weights (LiteMedSAM: its shipped weights).
Writes reports/benchmarks/encoders.csv and prints a table.

    python benchmarks/encoders.py --encoders mind litemedsam tiny-dinov2 tiny-sam
    python benchmarks/encoders.py --encoders dinov2-b sam-b --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ENCODERS = {
    "mind": {"kind": "mind", "grid": 64},
    "litemedsam": {"kind": "litemedsam"},
    "tiny-dinov2": {"kind": "dinov2", "random_init": True, "input_size": 224, "grid": 64,
                    "arch": {"embed_dim": 192, "depth": 4, "num_heads": 3}},
    "tiny-sam": {"kind": "sam", "random_init": True, "input_size": 256, "grid": 64,
                 "arch": {"embed_dim": 192, "depth": 4, "num_heads": 3, "window_size": 8, "global_attn_indexes": [1, 3]}},
    "dinov2-b": {"kind": "dinov2", "random_init": True},  # 896 px → 64 × 64 tokens, 768 channels
    "sam-b": {"kind": "sam", "random_init": True},  # 1024 px → 256 × 64 × 64
}


def run_one(name: str, device: str, repeats: int, image_size: int) -> dict:
    import torch

    from featreg.encoders.features import build_encoder
    from featreg.encoders.registry import EncoderSpec

    encoder = build_encoder(EncoderSpec.from_dict(name, ENCODERS[name]), device)
    image = torch.rand(1, 1, image_size, image_size, device=device, requires_grad=True)

    def step():
        image.grad = None
        encoder(image).mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    seconds = (time.perf_counter() - start) / repeats
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with torch.no_grad():
        shape = tuple(encoder(image).shape)
    return {
        "encoder": name, "device": device, "input_size": encoder.input_size, "output_shape": "x".join(map(str, shape)),
        "parameters_m": round(sum(p.numel() for p in encoder.parameters()) / 1e6, 2),
        "seconds_per_fwd_bwd": round(seconds, 4), "peak_memory_mb": round(peak, 1), "repeats": repeats,
        "threads": torch.get_num_threads(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["mind", "litemedsam", "tiny-dinov2", "tiny-sam"], choices=sorted(ENCODERS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/encoders.csv"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.device, args.repeats, args.image_size)))
        return 0
    rows = []
    for name in args.encoders:
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device, "--repeats", str(args.repeats),
               "--image-size", str(args.image_size)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name}: {rows[-1]['seconds_per_fwd_bwd']:.3f} s, {rows[-1]['peak_memory_mb']:.0f} MB", file=sys.stderr)
    table = pd.DataFrame(rows)
    from featreg.io import atomic_path

    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

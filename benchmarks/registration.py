"""Registration engine speed against plain single-pair baselines, in one process.

    python benchmarks/registration.py [--iterations N] [--device cpu|cuda] [--batches 1 8 32] [--repeats R] [--threads T]

Two setups on 128x128 pairs with 24x24 control points: ``ncc`` (cubic B-spline,
global NCC + airlab diffusion, λ 120) and ``paper`` (paper mode: order 1 at
airlab's 6 px stride, diffeomorphic with 10 squaring steps sampled as airlab's,
same objective). The engine (``register_pairs``) optimises B pairs jointly, with
its fused CPU kernels (``featreg``) and without them (``featreg_torch``: the
torch ops it uses on GPU, what it ran on CPU before the kernels).
Baselines, one pair at a time, same objective: ``conv_transpose`` (what an
airlab-style loop does: ``conv_transpose2d`` B-spline, ``grid_sample`` warp)
and ``matmul`` (the plain separable matmul B-spline Bx·C·Byᵀ, docs/references.md, "B-spline evaluation"),
both written below; and ``elastix`` per pair (featreg's elastix method at its
defaults, its own iterations) where itk-elastix and featreg's elastix module are
installed. Each figure is the fastest of ``--repeats`` runs, all engines
interleaved so they see the same load on a shared machine; ``spread`` is the
slowest over the fastest. Runs use ``--iterations`` (200 by default); figures
per pair-iteration extrapolate linearly to the paper's 1500
(``seconds_per_pair_1500``). All engines run with ``--threads`` torch threads
(torch's default when not given). Writes reports/benchmarks/registration.csv:
setup, engine, threads, batch, iterations, ms per pair-iteration, speedup
against ``conv_transpose``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from featreg.io import atomic_path
from featreg.registration import RegistrationSettings, kernels, register_pairs
from featreg.registration.bspline import basis_matrix, bspline_kernel
from featreg.registration.elastix import ElastixSettings, register_elastix

SHAPE = (128, 128)
LATTICE = 24
STRIDE = 6  # px between control points, as airlab's sigma=[6, 6]
CSV_PATH = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "registration.csv"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"  # its elastix row's settings are benchmarked


def make_pairs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random textured images (fixed) and a smoothly shifted copy (moving), in [0, 1]."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    fixed, moving = [], []
    for _ in range(batch):
        k = rng.uniform(0.05, 0.2, (4, 2))
        p = rng.uniform(0, 2 * np.pi, 4)
        shift_i = 2 * np.sin(2 * np.pi * j / SHAPE[1] + p[0])
        shift_j = 2 * np.cos(2 * np.pi * i / SHAPE[0] + p[1])

        def image(a, b):
            return sum(np.sin(k[n, 0] * a + k[n, 1] * b + p[n]) for n in range(4))

        f, m = image(i, j), image(i + shift_i, j + shift_j)
        fixed.append((f - f.min()) / np.ptp(f))
        moving.append((m - m.min()) / np.ptp(m))
    to = lambda x: torch.from_numpy(np.stack(x)[:, None].astype(np.float32))  # noqa: E731
    return to(fixed), to(moving)


def baseline_register(fixed: torch.Tensor, moving: torch.Tensor, *, order: int, diffeomorphic: bool, iterations: int,
                      field: str = "conv_transpose", lam: float = 120.0, lr: float = 5e-4, steps: int = 10) -> float:
    """Single-pair loop with the engine's NCC and diffusion; returns its wall seconds.

    ``field`` is ``conv_transpose`` (airlab's way) or ``matmul`` (Bx·C·Byᵀ); both
    place the control points as airlab does (pixel 6k - 5). Diffeomorphic runs
    square ``steps`` times with ``grid_sample``'s defaults, as airlab's ``Diffeomorphic``.
    """
    device = fixed.device
    radius = (order + 1) // 2 * STRIDE
    t = torch.arange(-radius, radius + 1, dtype=torch.float32) / STRIDE
    k1 = bspline_kernel(t, order)
    kernel = (k1[:, None] * k1[None, :]).expand(2, 1, -1, -1).contiguous().to(device)
    full = (LATTICE - 1) * STRIDE + kernel.shape[-1]
    crop = (full - SHAPE[0]) // 2  # knot k at pixel 6k - 5, as airlab's crop [5:-6]
    basis = basis_matrix(SHAPE[0], LATTICE, float(STRIDE), order, placement="airlab", device=device)
    params = torch.zeros(1, 2, LATTICE, LATTICE, device=device, requires_grad=True)
    g = torch.linspace(-1, 1, SHAPE[0], device=device)
    identity = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1)[None].flip(-1)  # (1, X, Y, 2), grid order
    optimizer = torch.optim.Adam([params], lr=lr)

    def warp(values, disp):  # disp (1, X, Y, 2) in grid order
        return F.grid_sample(values, identity + disp, align_corners=True, padding_mode="border")

    start = time.perf_counter()
    for _ in range(iterations):
        optimizer.zero_grad()
        if field == "conv_transpose":
            flow = F.conv_transpose2d(params, kernel, stride=STRIDE, groups=2)[:, :, crop:crop + SHAPE[0], crop:crop + SHAPE[1]]
        else:
            flow = basis @ params @ basis.T
        disp = flow.permute(0, 2, 3, 1)
        if diffeomorphic:
            disp = disp / 2**steps
            for _ in range(steps):
                disp = disp + F.grid_sample(disp.permute(0, 3, 1, 2), identity + disp, align_corners=False).permute(0, 2, 3, 1)
        warped = warp(moving, disp)
        mask = ((identity + disp).abs() <= 1).all(dim=-1)[:, None]
        f, w = fixed[mask], warped[mask]
        f, w = f - f.mean(), w - w.mean()
        ncc = -(f * w).sum() / torch.sqrt((f * f).sum() * (w * w).sum() + 1e-10)
        d = disp[0]
        dx = (d[1:, 1:] - d[:-1, 1:]) ** 2
        dy = (d[1:, 1:] - d[1:, :-1]) ** 2
        reg = F.pad(dx + dy, (0, 1, 0, 1)).mean()
        (ncc + lam * reg).backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def elastix_seconds(fixed: torch.Tensor, moving: torch.Tensor, threads: int) -> tuple[float, int]:
    """Wall seconds of one elastix registration (featreg's elastix defaults) and its optimiser steps."""
    settings = ElastixSettings()
    result = register_elastix(fixed[0, 0].cpu().numpy(), moving[0, 0].cpu().numpy(), (1.8, 1.8), settings, threads=threads)
    return result.seconds, settings.total_iterations


SETUPS = {
    "ncc": (RegistrationSettings(lattice=(LATTICE, LATTICE), order=3), dict(order=3, diffeomorphic=False)),
    "paper": (RegistrationSettings.paper(), dict(order=1, diffeomorphic=True)),
}


BASELINES = ("conv_transpose", "matmul")
ENGINES = {"featreg": True, "featreg_torch": False}
"""The engine with and without its fused CPU kernels (:data:`featreg.registration.kernels.FUSED_CPU`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts (shared machines are noisy)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for all engines (default: torch's)")
    parser.add_argument("--out", type=Path, default=CSV_PATH)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    device = torch.device(args.device)
    n = args.iterations
    elastix = ElastixSettings.from_dict(yaml.safe_load(CONFIG.read_text())["methods"]["elastix"]["settings"])
    rows = []
    print(f"torch {torch.__version__}, {threads} threads, device {device}, {platform.processor() or platform.machine()}")
    print(f"{n} iterations per run, fastest of {args.repeats}; seconds per pair at 1500 iterations extrapolate linearly")
    header = f"{'setup':6} {'batch':>5} {'engine':15} {'ms/pair-it':>10} {'s/pair@1500':>11} {'speedup':>8} {'spread':>7}"
    print("\n" + header)
    print("-" * len(header))
    for name, (settings, base_kw) in SETUPS.items():
        settings = RegistrationSettings.from_dict({**settings.to_dict(), "iterations": n})
        base_fixed, base_moving = (t.to(device) for t in make_pairs(1, seed=99))
        register_pairs(base_fixed, base_moving, RegistrationSettings.from_dict({**settings.to_dict(), "iterations": 10}),
                       device=device, progress_every_s=None)  # warm-up
        for field in BASELINES:
            baseline_register(base_fixed, base_moving, iterations=10, field=field, **base_kw)
        batches = {batch: make_pairs(batch) for batch in args.batches}
        runs = {**{(engine, 1): [] for engine in BASELINES},
                **{(engine, batch): [] for engine in ENGINES for batch in batches}}
        iterations = dict.fromkeys(runs, n)
        if name == "ncc":  # elastix has one setup: B-spline + NCC
            runs[("elastix", 1)] = []
        for _ in range(args.repeats):  # interleaved: a load spike hits one repeat of each, not one engine
            for field in BASELINES:
                runs[(field, 1)].append(baseline_register(base_fixed, base_moving, iterations=n, field=field, **base_kw))
            for engine, fused in ENGINES.items():
                kernels.FUSED_CPU = fused
                for batch, (fixed, moving) in batches.items():
                    result = register_pairs(fixed, moving, settings, device=device, progress_every_s=None)
                    runs[(engine, batch)].append(result.seconds)
            kernels.FUSED_CPU = True
            if ("elastix", 1) in runs:
                seconds, iterations[("elastix", 1)] = elastix_seconds(base_fixed, base_moving, threads)
                runs[("elastix", 1)].append(seconds)
        base_ms = 1e3 * min(runs[("conv_transpose", 1)]) / n
        for (engine, batch), seconds in runs.items():
            steps = iterations[(engine, batch)]
            ms = 1e3 * min(seconds) / steps / batch
            row = dict(setup=name, engine=engine, threads=threads, batch=batch, iterations=steps,
                       ms_per_pair_iteration=ms, seconds_per_pair_1500=ms * 1.5 if engine != "elastix" else min(seconds),
                       speedup=base_ms / ms, spread=max(seconds) / min(seconds))
            rows.append(row)
            print(f"{row['setup']:6} {row['batch']:>5} {row['engine']:15} {row['ms_per_pair_iteration']:10.3f} "
                  f"{row['seconds_per_pair_1500']:11.2f} {row['speedup']:7.1f}x {row['spread']:7.2f}")
    print("\nms/pair-it: wall time of a run / its iterations / pairs in the batch; speedup: against conv_transpose "
          "(one pair at a time). elastix: its own iterations, s/pair@1500 is one whole registration")
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) + ["device"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}, "device": str(device)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

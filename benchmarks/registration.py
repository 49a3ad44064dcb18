"""Registration engine speed against a plain airlab-style baseline, in one process.

    python benchmarks/registration.py [--iterations N] [--device cpu|cuda] [--batches 1 8 32] [--repeats R] [--threads T]

Two setups on 128x128 pairs with a 24x24 lattice: ``ncc`` (cubic B-spline,
global NCC + airlab diffusion, λ 120) and ``paper`` (order 1, diffeomorphic,
7 squaring steps, same objective). The engine (``register_pairs``) optimises
B pairs jointly; the baseline, written below, is what an airlab-style loop
does: ``conv_transpose2d`` B-spline, ``grid_sample`` warp, one pair at a time.
Each figure is the fastest of ``--repeats`` runs, baseline and engine runs
interleaved so both see the same load on a shared machine; ``spread`` is the
slowest over the fastest. Runs use ``--iterations`` (200 by default, so the
whole benchmark takes a few minutes); the per-iteration figures extrapolate
linearly to the paper's 1500 (``seconds_per_pair_1500``). Both engines run
with ``--threads`` torch threads (torch's default when not given). Writes
reports/benchmarks/registration.csv.

Beside the ``ncc`` setup, in the same repeats, elastix (``engine`` elastix)
registers ``--elastix-pairs`` pairs one at a time (pixel spacing 1.8 mm) with the
default config's elastix settings (NCC + bending energy 0.1, 3 resolutions × 250
iterations, 2048 random samples) on the same number of threads; its
``iterations`` are all resolutions' together, and its ``speedup`` compares
seconds per pair at 1500 iterations with the baseline's.
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
from featreg.registration import RegistrationSettings, register_pairs
from featreg.registration.bspline import bspline_kernel
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


def baseline_register(fixed: torch.Tensor, moving: torch.Tensor, *, order: int, diffeomorphic: bool,
                      iterations: int, lam: float = 120.0, lr: float = 5e-4, steps: int = 7) -> float:
    """airlab-style single-pair loop; returns its wall seconds. Same NCC and diffusion as the engine."""
    device = fixed.device
    radius = (order + 1) // 2 * STRIDE
    t = torch.arange(-radius, radius + 1, dtype=torch.float32) / STRIDE
    k1 = bspline_kernel(t, order)
    kernel = (k1[:, None] * k1[None, :]).expand(2, 1, -1, -1).contiguous().to(device)
    params = torch.zeros(1, 2, LATTICE, LATTICE, device=device, requires_grad=True)
    full = (LATTICE - 1) * STRIDE + kernel.shape[-1]
    crop = (full - SHAPE[0]) // 2
    g = torch.linspace(-1, 1, SHAPE[0], device=device)
    identity = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1)[None].flip(-1)  # (1, X, Y, 2), grid order
    optimizer = torch.optim.Adam([params], lr=lr)

    def warp(values, disp):  # disp (1, X, Y, 2) in grid order
        return F.grid_sample(values, identity + disp, align_corners=True, padding_mode="border")

    start = time.perf_counter()
    for _ in range(iterations):
        optimizer.zero_grad()
        flow = F.conv_transpose2d(params, kernel, stride=STRIDE, groups=2)[:, :, crop:crop + SHAPE[0], crop:crop + SHAPE[1]]
        disp = flow.permute(0, 2, 3, 1)
        if diffeomorphic:
            disp = disp / 2**steps
            for _ in range(steps):
                disp = disp + warp(disp.permute(0, 3, 1, 2), disp).permute(0, 2, 3, 1)
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


def elastix_seconds(fixed: torch.Tensor, moving: torch.Tensor, settings: ElastixSettings, threads: int) -> float:
    """Wall seconds elastix takes for the pairs of ``fixed``/``moving`` ``(B, 1, X, Y)``, one at a time."""
    return sum(register_elastix(f[0].numpy(), m[0].numpy(), (1.8, 1.8), settings, threads=threads).seconds
               for f, m in zip(fixed, moving))


SETUPS = {
    "ncc": (RegistrationSettings(lattice=(LATTICE, LATTICE), order=3), dict(order=3, diffeomorphic=False)),
    "paper": (RegistrationSettings.paper(), dict(order=1, diffeomorphic=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts (shared machines are noisy)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both engines (default: torch's)")
    parser.add_argument("--elastix-pairs", type=int, default=4, help="pairs elastix registers per repeat")
    parser.add_argument("--out", type=Path, default=CSV_PATH)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.iterations
    elastix = ElastixSettings.from_dict(yaml.safe_load(CONFIG.read_text())["methods"]["elastix"]["settings"])
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {platform.processor() or platform.machine()}")
    print(f"{n} iterations per run, fastest of {args.repeats}; seconds per pair at 1500 iterations extrapolate linearly\n")
    header = f"{'setup':6} {'batch':>5} {'engine':9} {'ms/it':>8} {'s/pair':>8} {'s/pair@1500':>11} {'speedup':>8} {'spread':>7}"
    print(header)
    print("-" * len(header))
    for name, (settings, base_kw) in SETUPS.items():
        settings = RegistrationSettings.from_dict({**settings.to_dict(), "iterations": n})
        base_fixed, base_moving = (t.to(device) for t in make_pairs(1, seed=99))
        register_pairs(base_fixed, base_moving, RegistrationSettings.from_dict({**settings.to_dict(), "iterations": 10}),
                       device=device, progress=False)  # warm-up
        baseline_register(base_fixed, base_moving, iterations=10, **base_kw)
        batches = {batch: make_pairs(batch) for batch in args.batches}
        times: dict[int | None, list[float]] = {None: [], **{batch: [] for batch in batches}}
        elastix_pairs = make_pairs(args.elastix_pairs) if name == "ncc" else None
        if elastix_pairs is not None:
            elastix_seconds(base_fixed[:1].cpu(), base_moving[:1].cpu(), elastix, torch.get_num_threads())  # warm-up
        elastix_times: list[float] = []
        for _ in range(args.repeats):  # interleaved: a load spike hits one repeat of each, not one engine
            times[None].append(baseline_register(base_fixed, base_moving, iterations=n, **base_kw))
            for batch, (fixed, moving) in batches.items():
                times[batch].append(register_pairs(fixed, moving, settings, device=device, progress=False).seconds)
            if elastix_pairs is not None:
                elastix_times.append(elastix_seconds(*elastix_pairs, elastix, torch.get_num_threads()))
        base_per_pair = min(times[None])
        measured = [(batch or 1, "featreg" if batch else "baseline", n, seconds) for batch, seconds in times.items()]
        if elastix_times:
            measured.append((args.elastix_pairs, "elastix", elastix.total_iterations, elastix_times))
        for batch, engine, iterations, seconds in measured:
            per_pair = min(seconds) / batch
            one_call = per_pair if engine == "elastix" else min(seconds)  # elastix runs one pair at a time
            row = dict(setup=name, batch=1 if engine == "elastix" else batch, engine=engine, iterations=iterations,
                       ms_per_iteration=1e3 * one_call / iterations, seconds_per_pair=per_pair,
                       seconds_per_pair_1500=per_pair * 1500 / iterations,
                       speedup=(base_per_pair / n) / (per_pair / iterations), spread=max(seconds) / min(seconds))
            rows.append(row)
            print(f"{row['setup']:6} {row['batch']:>5} {row['engine']:9} {row['ms_per_iteration']:8.2f} "
                  f"{row['seconds_per_pair']:8.3f} {row['seconds_per_pair_1500']:11.2f} {row['speedup']:7.1f}x "
                  f"{row['spread']:7.2f}")
    print("\nbaseline: one pair at a time (its per-pair cost is the same at any batch size); "
          "ms/it is per optimiser iteration of the whole batch; elastix: one pair at a time, its iterations "
          "are all resolutions' together, speedup compares s/pair@1500")
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) + ["device"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}, "device": str(device)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

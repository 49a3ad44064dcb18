"""``compute.batch_size: auto``: the largest batch that fits, from a per-pair footprint measured at job start.

On CUDA, one pair is registered for :data:`PROBE_ITERATIONS` iterations; its
footprint is the allocator's peak over what was allocated before (encoder
weights and cached tensors excluded), which also counts the batch-independent
workspace, so it errs on the safe side. The batch is the free memory, less
:data:`HEADROOM`, over that footprint. On CPU batching saves little (the work
is per pixel) and memory is shared with other jobs, so ``auto`` is
:data:`CPU_BATCH`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from featreg.registration.optimize import Encoder, register_pairs
from featreg.registration.settings import RegistrationSettings

logger = logging.getLogger(__name__)

HEADROOM = 0.2
"""Fraction of the free device memory left unused (allocator fragmentation, other kernels' workspace)."""
CPU_BATCH = 8
"""``auto`` on CPU."""
PROBE_ITERATIONS = 2


def largest_batch(free_bytes: int, per_pair_bytes: int, *, headroom: float = HEADROOM, limit: int | None = None) -> int:
    """Pairs that fit in ``free_bytes`` less ``headroom``, at least 1 and at most ``limit``."""
    if free_bytes < 0 or per_pair_bytes <= 0:
        raise ValueError(f"free_bytes must be >= 0 and per_pair_bytes > 0, got {free_bytes} and {per_pair_bytes}")
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be in [0, 1), got {headroom}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    fits = max(1, int(free_bytes * (1 - headroom)) // per_pair_bytes)
    return fits if limit is None else min(fits, limit)


def pair_footprint_bytes(
    fixed: np.ndarray,
    moving: np.ndarray,
    settings: RegistrationSettings,
    *,
    spacing: Sequence[float],
    encoder: Encoder | None,
    device: torch.device,
    fixed_features: torch.Tensor | None = None,
    moving_features: torch.Tensor | None = None,
) -> int:
    """Peak CUDA memory of registering one pair ``(1, 1, X, Y)``, over what was allocated before.

    ``fixed_features`` and ``moving_features`` (``(1, C, g, g)``) are the pair's, as
    :func:`~featreg.registration.optimize.register_pairs` takes them (``encode: once`` needs the moving ones).
    """
    if device.type != "cuda":
        raise ValueError(f"the footprint is measured on a CUDA device, got {device}")
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    probe = dataclasses.replace(settings, iterations=PROBE_ITERATIONS, early_stop_rtol=None)
    result = register_pairs(fixed, moving, probe, spacing=spacing, encoder=encoder, fixed_features=fixed_features,
                            moving_features=moving_features, device=device, progress_every_s=None)
    return max(1, int(result.peak_memory_mb * 2**20) - before)


def auto_batch_size(
    fixed: np.ndarray,
    moving: np.ndarray,
    settings: RegistrationSettings,
    *,
    spacing: Sequence[float],
    encoder: Encoder | None,
    device: torch.device,
    limit: int,
    fixed_features: torch.Tensor | None = None,
    moving_features: torch.Tensor | None = None,
) -> tuple[int, dict[str, Any]]:
    """The batch for ``auto`` from one sample pair (and its features, as :func:`pair_footprint_bytes`), and how it was chosen (for ``run.json``)."""
    if device.type != "cuda":
        batch = min(CPU_BATCH, limit)
        return batch, {"requested": "auto", "batch_size": batch, "rule": f"fixed {CPU_BATCH} on {device.type}"}
    per_pair = pair_footprint_bytes(fixed, moving, settings, spacing=spacing, encoder=encoder, device=device,
                                    fixed_features=fixed_features, moving_features=moving_features)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    batch = largest_batch(free, per_pair, limit=limit)
    record = {
        "requested": "auto",
        "batch_size": batch,
        "rule": f"free memory x (1 - {HEADROOM}) / per-pair footprint, at most the {limit} pending pairs",
        "per_pair_mb": round(per_pair / 2**20, 1),
        "free_mb": round(free / 2**20, 1),
        "total_mb": round(total / 2**20, 1),
    }
    logger.info("batch_size auto: %d (per pair %.0f MB, free %.0f MB)", batch, record["per_pair_mb"], record["free_mb"])
    return batch, record

"""Progress of one batch's optimisation as plain log lines that read well in a job's log file.

A batch of pairs finishes all at once, so a job log that only counts finished pairs
stays silent for minutes. :class:`ProgressLog` writes a line at most every
``every_s`` seconds: iteration, mean loss over the active pairs, pairs still
active, iterations per second and the time left. Deciding whether a line is due
only reads the host clock; the loss and the active flags are read from the device
only when a line is written.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

PROGRESS_EVERY_S = 30.0
"""Default seconds between two progress lines of one batch."""


class ProgressLog:
    """Rate-limited progress lines for ``total`` iterations of a batch of pairs."""

    def __init__(self, total: int, every_s: float | None, logger: logging.Logger, *, clock: Callable[[], float] = time.perf_counter):
        if every_s is not None and not every_s >= 0:
            raise ValueError(f"every_s must be >= 0 or None, got {every_s!r}")
        self.total = total
        self.every_s = every_s
        self.logger = logger
        self.clock = clock
        self.start = self.last = clock()

    def due(self) -> bool:
        """Whether a line is due now (host clock only, no device read)."""
        return self.every_s is not None and self.clock() - self.last >= self.every_s

    def write(self, iteration: int, loss: torch.Tensor, active: torch.Tensor) -> None:
        """Log iteration ``iteration`` (1-based, done) with per-pair ``loss (B,)`` and ``active (B,)`` flags."""
        now = self.clock()
        self.last = now
        kept = loss[active & torch.isfinite(loss)]
        mean = float(kept.mean()) if kept.numel() else math.nan
        rate = iteration / max(now - self.start, 1e-9)
        self.logger.info(
            "iteration %d/%d: mean loss %.6g over %d/%d active pair(s), %.1f it/s, ETA %s",
            iteration,
            self.total,
            mean,
            int(active.sum()),
            active.numel(),
            rate,
            _duration((self.total - iteration) / rate),
        )


def _duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``12 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"

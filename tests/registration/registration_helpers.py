"""Shared synthetic pairs and checks for the registration tests (imported by name; not a test module)."""

from __future__ import annotations

import numpy as np
import torch


def textured(points: np.ndarray, phase: float = 0.0) -> np.ndarray:
    """A smooth, textured image function of pixel coordinates ``points (2, X, Y)`` with values in [0, 1]."""
    x, y = points[0] / 9.0, points[1] / 9.0
    value = np.sin(x + phase) * np.cos(0.7 * y) + 0.5 * np.sin(0.6 * x - 1.3 * y + 2 * phase) + 0.3 * np.cos(1.4 * x + 0.4 * y)
    return ((value + 1.8) / 3.6).astype(np.float32)


def smooth_field_px(shape: tuple[int, int], amplitude: float, seed: int = 0) -> np.ndarray:
    """A smooth displacement ``(2, X, Y)`` in pixels, zero-mean sinusoids of the given amplitude."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    field = []
    for _ in range(2):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        field.append(amplitude * np.sin(2 * np.pi * i / shape[0] + a) * np.cos(2 * np.pi * j / shape[1] + b) + 0.3 * amplitude * np.sin(c))
    return np.stack(field).astype(np.float64)


def known_pair():
    """(fixed, moving, true displacement in px) with fixed(x) = moving(x + u(x)) exactly (analytic)."""
    shape = (64, 64)
    points = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")).astype(np.float64)
    u = smooth_field_px(shape, amplitude=2.5)
    moving = textured(points)
    fixed = textured(points + u)
    return torch.from_numpy(fixed)[None, None], torch.from_numpy(moving)[None, None], u


def jacobian_det_px(u_px: np.ndarray) -> np.ndarray:
    """det(I + ∇u) with numpy central differences (one-sided at the border), u in pixels."""
    d0 = np.gradient(u_px[0], axis=(0, 1))
    d1 = np.gradient(u_px[1], axis=(0, 1))
    return (1 + d0[0]) * (1 + d1[1]) - d0[1] * d1[0]

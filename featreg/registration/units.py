"""Units of displacement fields: normalised (``align_corners=True``) against pixels and mm.

Inside the optimiser a displacement is normalised: coordinate -1 is the centre of the
first pixel, +1 the centre of the last, so 1 unit = (N - 1) / 2 pixels along an axis of
N pixels (docs/design.md). On disk it is in mm, component c along array axis c.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pixel_scale(shape: Sequence[int]) -> tuple[float, float]:
    """Pixels per normalised unit along each axis: (N - 1) / 2."""
    return ((shape[0] - 1) / 2, (shape[1] - 1) / 2)


def displacement_to_mm(displacement: np.ndarray | torch.Tensor, spacing: Sequence[float]) -> np.ndarray:
    """Normalised ``(B, 2, X, Y)`` or ``(2, X, Y)`` field to mm: component c times (N_c - 1) / 2 · spacing_c."""
    field = displacement.detach().cpu().numpy() if isinstance(displacement, torch.Tensor) else np.asarray(displacement)
    X, Y = field.shape[-2:]
    sx, sy = pixel_scale((X, Y))
    factor = np.array([sx * spacing[0], sy * spacing[1]], dtype=np.float64).reshape(2, 1, 1)
    return (field * factor).astype(np.float32)


def displacement_from_mm(field_mm: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`displacement_to_mm` for a ``(2, X, Y)`` or ``(B, 2, X, Y)`` field."""
    field_mm = np.asarray(field_mm)
    X, Y = field_mm.shape[-2:]
    sx, sy = pixel_scale((X, Y))
    factor = np.array([sx * spacing[0], sy * spacing[1]], dtype=np.float64).reshape(2, 1, 1)
    return (field_mm / factor).astype(np.float32)

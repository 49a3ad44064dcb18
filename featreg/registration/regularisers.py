"""Diffusion regularisers of a normalised displacement ``(B, 2, X, Y)``, one value per pair.

Two conventions, because λ only means something under a stated one:

- ``airlab``: airlab's ``DiffusionRegulariser`` exactly as the paper ran it
  (λ = 120 reproduces the paper). Forward differences of the *normalised*
  displacement along each axis, both taken on the crop ``[1:, 1:]``, squared,
  multiplied (not squared) by the spacing (the paper passed ``[1, 1]``),
  summed over the two difference directions, then averaged. airlab zero-pads
  that ``(X-1, Y-1, 2)`` array to ``(X-1, Y, 3)`` before its mean, so the mean
  divides the sum by ``(X-1)·Y·3``; we keep that divisor.
- ``physical``: mean over pixels of the squared Frobenius norm of the
  displacement gradient ∂u_i/∂x_j in mm/mm (forward differences on the same
  crop, divided by the spacing in mm). Dimensionless and independent of image
  size and spacing, so λ transfers between data sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from featreg.registration.settings import REGULARISERS
from featreg.registration.units import pixel_scale


def diffusion_weights(name: str, shape: Sequence[int], spacing: Sequence[float]) -> torch.Tensor:
    """``(2, 2)`` float64 ``w`` with regulariser = ``Σ_ij w[i, j] · Σ (Δ_j u_i)²`` (component i, axis j).

    Δ_j is the forward difference of the normalised displacement along axis j
    on the crop ``[1:, 1:]``. Both conventions are such weighted sums, so the
    engine can evaluate them on the dense field (:func:`diffusion`) or on the
    B-spline lattice (:meth:`~featreg.registration.bspline.BSplineTransform.difference_energy`).
    ``airlab`` takes ``spacing`` as airlab's ``pixel_spacing``; ``physical`` as mm.
    """
    X, Y = int(shape[0]), int(shape[1])
    if name == "airlab":
        return torch.tensor([spacing[0], spacing[1]], dtype=torch.float64).expand(2, 2) / ((X - 1) * Y * 3)
    if name == "physical":
        sx, sy = pixel_scale((X, Y))
        # u_i in mm is u_i(normalised) * scale_i * spacing_i; a step along axis j is spacing_j mm.
        unit = torch.tensor([sx * spacing[0], sy * spacing[1]], dtype=torch.float64)
        step = torch.tensor([spacing[0], spacing[1]], dtype=torch.float64)
        return (unit[:, None] / step[None, :]) ** 2 / ((X - 1) * (Y - 1))
    raise ValueError(f"regulariser must be one of {REGULARISERS}, got {name!r}")


def regulariser_weights(name: str, shape: Sequence[int], spacing: Sequence[float]) -> torch.Tensor:
    """:func:`diffusion_weights` of a named regulariser: ``airlab`` ignores the image spacing (airlab's [1, 1])."""
    return diffusion_weights(name, shape, (1.0, 1.0) if name == "airlab" else spacing)


def diffusion(displacement: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_ij weights[i, j] · Σ (Δ_j u_i)²`` per pair of a dense normalised displacement ``(B, 2, X, Y)``."""
    dx = displacement[:, :, 1:, 1:] - displacement[:, :, :-1, 1:]
    dy = displacement[:, :, 1:, 1:] - displacement[:, :, 1:, :-1]
    w = weights.to(displacement.dtype).to(displacement.device)
    return (dx * dx).sum(dim=(2, 3)) @ w[:, 0] + (dy * dy).sum(dim=(2, 3)) @ w[:, 1]

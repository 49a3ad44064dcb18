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

from featreg.registration.bspline import pixel_scale


def _forward_differences(displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differences along axis 0 and axis 1, both on the crop [1:, 1:] (airlab's layout)."""
    dx = displacement[:, :, 1:, 1:] - displacement[:, :, :-1, 1:]
    dy = displacement[:, :, 1:, 1:] - displacement[:, :, 1:, :-1]
    return dx, dy


def diffusion_airlab(displacement: torch.Tensor, spacing: Sequence[float] = (1.0, 1.0)) -> torch.Tensor:
    """airlab's diffusion value per pair; ``spacing`` is airlab's ``pixel_spacing`` (the paper: (1, 1))."""
    B, _, X, Y = displacement.shape
    dx, dy = _forward_differences(displacement)
    total = (dx**2 * spacing[0] + dy**2 * spacing[1]).flatten(1).sum(dim=1)
    return total / ((X - 1) * Y * 3)


def diffusion_physical(displacement: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """Mean over pixels of ‖∇u‖²_F with u in mm and x in mm (``spacing`` in mm, array-axis order)."""
    B, _, X, Y = displacement.shape
    sx, sy = pixel_scale((X, Y))
    # u_i in mm is u_i(normalised) * scale_i * spacing_i; a step along axis j is spacing_j mm.
    unit = torch.tensor([sx * spacing[0], sy * spacing[1]], dtype=displacement.dtype, device=displacement.device)
    dx, dy = _forward_differences(displacement * unit.view(1, 2, 1, 1))
    total = (dx**2 / spacing[0] ** 2 + dy**2 / spacing[1] ** 2).sum(dim=1)
    return total.flatten(1).mean(dim=1)


REGULARISERS = ("airlab", "physical")


def regulariser(name: str, displacement: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """Dispatch by name: ``airlab`` ignores the image spacing (airlab's [1, 1]); ``physical`` uses it."""
    if name == "airlab":
        return diffusion_airlab(displacement)
    if name == "physical":
        return diffusion_physical(displacement, spacing)
    raise ValueError(f"regulariser must be one of {REGULARISERS}, got {name!r}")

"""Joint PCA of a pair's feature maps (``pca: k``), as DINO-Reg reduces DINOv2 features before registering.

The basis is computed once per pair, from the unwarped fixed and moving maps together,
centred on their joint mean; every map the loop compares is then projected with it.
At the identity every cell's sample point is inside the image (cell centres lie
within the outer pixel centres, :func:`featreg.registration.sampling.feature_points`),
so the inside-the-image pixels are all cells of both maps.
Projection is affine per cell with weights that do not depend on the position, so it
commutes with bilinear sampling (whose weights sum to one): projecting the moving map
once and warping it equals warping it and projecting the result.
"""

from __future__ import annotations

import torch


def joint_basis(fixed: torch.Tensor, moving: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair ``(mean (B, C), basis (B, C, k), kept (B,))`` of feature maps ``(B, C, gx, gy)``.

    ``basis`` holds the first k principal directions of both maps' cells (orthonormal
    columns, largest variance first), ``kept`` the fraction of the joint variance they
    hold (1 when the maps are constant). Eigen-decomposition of the channel covariance
    in float64; the results have ``fixed``'s dtype (``kept``: float64).
    """
    if fixed.ndim != 4 or fixed.shape != moving.shape:
        raise ValueError(f"fixed and moving features must share a shape (B, C, gx, gy), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    channels = fixed.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= channels:
        raise ValueError(f"pca = {k!r} needs an integer between 1 and the features' {channels} channels")
    cells = torch.cat((fixed.flatten(2), moving.flatten(2)), dim=2).double()  # (B, C, 2·cells)
    mean = cells.mean(dim=2, keepdim=True)
    centred = cells - mean
    variances, directions = torch.linalg.eigh(centred @ centred.transpose(1, 2))  # ascending
    variances = variances.flip(-1).clamp(min=0)
    total = variances.sum(dim=-1)
    kept = torch.where(total > 0, variances[:, :k].sum(dim=-1) / total.clamp(min=torch.finfo(total.dtype).tiny), 1.0)
    basis = directions.flip(-1)[:, :, :k]
    return mean[..., 0].to(fixed.dtype), basis.to(fixed.dtype), kept


def project(features: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``(B, C, gx, gy)`` features onto ``basis (B, C, k)`` about ``mean (B, C)``: ``(B, k, gx, gy)``, differentiable."""
    if features.ndim != 4 or features.shape[:2] != basis.shape[:2]:
        raise ValueError(f"features {tuple(features.shape)} do not match a basis for {tuple(basis.shape[:2])} (B, C)")
    return torch.einsum("bcxy,bck->bkxy", features - mean[:, :, None, None], basis)

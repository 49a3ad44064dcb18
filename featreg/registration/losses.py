"""Image and feature dissimilarities, one value per pair: inputs ``(B, C, X, Y)``, output ``(B,)``.

Conventions follow the paper's code (REFERENCE.md §1): global NCC over the
pixels whose sample point lies inside the image, cosine dissimilarity as minus
the mean per-pixel cosine across channels, L1 as the mean absolute difference.
"""

from __future__ import annotations

import torch

NCC_EPS = 1e-10
"""Added under the square root of the NCC denominator, as the paper's code did."""


def ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative global NCC per pair: ``-Σ(F-F̄)(M-M̄) / sqrt(Σ(F-F̄)² Σ(M-M̄)² + 1e-10)``.

    Sums and means run over the pixels where ``mask`` (``(B, 1, X, Y)`` bool,
    e.g. :func:`featreg.registration.bspline.inside_mask`) is true; all pixels
    when it is None. -1 is a perfect (positive linear) match.
    """
    if fixed.shape != warped.shape:
        raise ValueError(f"fixed and warped shapes differ: {tuple(fixed.shape)} vs {tuple(warped.shape)}")
    if mask is None:
        mask = torch.ones_like(fixed[:, :1], dtype=torch.bool)
    # Centre both images in one tensor (fewer small ops per iteration).
    both = torch.cat((fixed.flatten(1), warped.flatten(1)), dim=0).view(2, fixed.shape[0], -1)
    m = mask.expand_as(fixed).flatten(1).to(fixed.dtype)
    count = m.sum(dim=1, keepdim=True).clamp(min=1)
    centred = (both - (both * m).sum(dim=2, keepdim=True) / count) * m
    cross = (centred[0] * centred[1]).sum(dim=1)
    squares = (centred * centred).sum(dim=2)
    return -cross / torch.sqrt(squares[0] * squares[1] + NCC_EPS)


def mse(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference per pair over the pixels where ``mask`` is true (all when None)."""
    if fixed.shape != warped.shape:
        raise ValueError(f"fixed and warped shapes differ: {tuple(fixed.shape)} vs {tuple(warped.shape)}")
    dims = tuple(range(1, fixed.ndim))
    if mask is None:
        return ((fixed - warped) ** 2).mean(dim=dims)
    m = mask.to(fixed.dtype).expand_as(fixed)
    return (((fixed - warped) ** 2) * m).sum(dim=dims) / m.sum(dim=dims).clamp(min=1)


def cosine_dissimilarity(fixed_features: torch.Tensor, warped_features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Minus the mean over pixels of the cosine between the channel vectors at each pixel; -1 is identical."""
    if fixed_features.shape != warped_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(fixed_features.shape)} vs {tuple(warped_features.shape)}")
    cos = torch.nn.functional.cosine_similarity(fixed_features, warped_features, dim=1, eps=eps)
    return -cos.flatten(1).mean(dim=1)


def l1_distance(fixed_features: torch.Tensor, warped_features: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over channels and pixels."""
    if fixed_features.shape != warped_features.shape:
        raise ValueError(f"feature shapes differ: {tuple(fixed_features.shape)} vs {tuple(warped_features.shape)}")
    return (fixed_features - warped_features).abs().flatten(1).mean(dim=1)


IMAGE_DISTANCES = {"ncc": ncc, "mse": mse}
FEATURE_DISTANCES = {"cosine": cosine_dissimilarity, "l1": l1_distance}

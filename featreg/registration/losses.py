"""Image and feature dissimilarities, one value per pair: inputs ``(B, C, X, Y)``, output ``(B,)``.

Conventions follow the paper's code (docs/references.md, "airlab" and "The paper"): global NCC over the
pixels whose sample point lies inside the image, cosine dissimilarity as minus
the mean per-pixel cosine across channels, L1 as the mean absolute difference.
"""

from __future__ import annotations

import torch

NCC_EPS = 1e-10
"""Added under the square root of the NCC denominator, as the paper's code did."""


class _NegativeNCC(torch.autograd.Function):
    """Masked negative global NCC per pair with a hand-written backward (one autograd node).

    With centred, masked images Fc = m(F - F̄), Mc = m(M - M̄) and
    D = sqrt(ΣFc² ΣMc² + eps): d(ΣFcMc / D)/dM = Fc / D - ΣFcMc · ΣFc² · Mc / D³
    (the centring terms vanish because ΣFc = ΣMc = 0), and symmetrically for F.
    """

    @staticmethod
    def forward(ctx, fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.flatten(1).to(fixed.dtype)  # (B, P), broadcast over channels
        f, w = fixed.flatten(2), warped.flatten(2)  # (B, C, P)
        count = (m.sum(dim=1) * fixed.shape[1]).clamp(min=1).view(-1, 1, 1)
        m = m.unsqueeze(1)
        fc = (f - (f * m).sum(dim=(1, 2), keepdim=True) / count) * m
        wc = (w - (w * m).sum(dim=(1, 2), keepdim=True) / count) * m
        cross = (fc * wc).sum(dim=(1, 2))
        sf, sw = (fc * fc).sum(dim=(1, 2)), (wc * wc).sum(dim=(1, 2))
        denominator = torch.sqrt(sf * sw + NCC_EPS)
        ctx.save_for_backward(fc, wc, cross, sf, sw, denominator)
        ctx.shape = fixed.shape
        return -cross / denominator

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        fc, wc, cross, sf, sw, denominator = ctx.saved_tensors
        g = (-grad / denominator).view(-1, 1, 1)
        k = (cross / denominator**2).view(-1, 1, 1)
        grad_fixed = grad_warped = None
        if ctx.needs_input_grad[0]:
            grad_fixed = (g * (wc - k * sw.view(-1, 1, 1) * fc)).view(ctx.shape)
        if ctx.needs_input_grad[1]:
            grad_warped = (g * (fc - k * sf.view(-1, 1, 1) * wc)).view(ctx.shape)
        return grad_fixed, grad_warped, None


def ncc(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Negative global NCC per pair: ``-Σ(F-F̄)(M-M̄) / sqrt(Σ(F-F̄)² Σ(M-M̄)² + 1e-10)``.

    Sums and means run over the pixels where ``mask`` (``(B, 1, X, Y)`` bool,
    e.g. :func:`featreg.registration.sampling.warp_grid_inside`'s) is true; all
    pixels when it is None. -1 is a perfect (positive linear) match.
    """
    if fixed.shape != warped.shape:
        raise ValueError(f"fixed and warped shapes differ: {tuple(fixed.shape)} vs {tuple(warped.shape)}")
    if mask is None:
        mask = torch.ones_like(fixed[:, :1], dtype=torch.bool)
    return _NegativeNCC.apply(fixed, warped, mask)


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

"""Warping: bilinear and nearest-neighbour samplers beneath the B-spline transform.

Two samplers with the same conventions (bilinear, ``align_corners=True``, border
replication, zero gradient along an axis where the point is clamped):

- the optimisation loop warps with ``grid_sample`` on a sampling grid
  (:meth:`~featreg.registration.bspline.BSplineTransform.sampling_grid`,
  :func:`warp_grid_inside`): its fused kernel is several times faster on CPU. Its
  identity grid is off by float rounding (~1e-7 px), which does not matter inside the
  loop; the image distance ignores pixels whose sample point lies outside the image.
- final outputs use our own bilinear interpolation in pixel coordinates
  (:func:`sample_bilinear`): the identity then samples exactly at integer pixel
  positions, so zero parameters reproduce the image bit for bit.

Displacements are normalised (:mod:`featreg.registration.units`); component c of a
field ``(B, 2, X, Y)`` is along array axis c, except for :func:`to_grid`, whose field
has its components in ``grid_sample``'s order (component 0 along Y, the last axis).
"""

from __future__ import annotations

import functools

import torch

from featreg.registration.units import pixel_scale


@functools.lru_cache(maxsize=32)
def _identity_grid(X: int, Y: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gx = torch.linspace(-1, 1, X, dtype=dtype, device=device)
    gy = torch.linspace(-1, 1, Y, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(gy, gx, indexing="xy"), dim=-1)[None]


@functools.lru_cache(maxsize=32)
def _pixel_frame(X: int, Y: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per shape constants of the samplers: pixel indices, px per unit, upper bounds, corner offsets."""
    base = torch.stack(torch.meshgrid(torch.arange(X, dtype=dtype), torch.arange(Y, dtype=dtype), indexing="ij"))[None]
    sx, sy = pixel_scale((X, Y))
    scale = torch.tensor([sx, sy], dtype=dtype).view(1, 2, 1, 1)
    upper = torch.tensor([X - 1, Y - 1], dtype=dtype).view(1, 2, 1, 1)
    offsets = torch.tensor([0, 1, Y, Y + 1]).view(1, 1, 4, 1)
    return tuple(t.to(device) for t in (base, scale, torch.zeros_like(upper), upper, upper - 1, offsets))


class _BilinearSample(torch.autograd.Function):
    """Bilinear sampling at pixel coordinates ``point (B, 2, X, Y)`` with a hand-written backward.

    Written as one autograd node because the same maths as separate tensor ops
    costs several times more per iteration on CPU (dispatch overhead on small
    tensors). Points are clamped onto the image (border replication); as for
    ``torch.clamp``, the gradient along an axis is zero where the point lies
    outside [0, N - 1].
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        B, C, X, Y = values.shape
        _, _, lower, upper, last_cell, offsets = _pixel_frame(X, Y, point.dtype, point.device)
        clamped = torch.clamp(point, min=lower, max=upper)
        inside = clamped == point  # (B, 2, X, Y): where the clamp lets the gradient through
        corner = torch.minimum(clamped.floor(), last_cell)
        w1 = clamped - corner  # weight of the upper neighbour along each axis
        w0 = 1 - w1
        pair = torch.stack((w0, w1), dim=1)  # (B, 2 neighbours, 2 axes, X, Y)
        weights = (pair[:, :, None, 0] * pair[:, None, :, 1]).view(B, 1, 4, X * Y)  # corners 00, 01, 10, 11
        index = (corner[:, 0] * Y + corner[:, 1]).long().view(B, 1, 1, X * Y) + offsets
        index = index.expand(B, C, 4, X * Y).reshape(B, C, 4 * X * Y)
        gathered = values.flatten(2).gather(2, index).view(B, C, 4, X * Y)
        out = (gathered * weights).sum(dim=2).view(B, C, X, Y)
        ctx.save_for_backward(gathered, w0, w1, weights, index, inside)
        ctx.shape = values.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        gathered, w0, w1, weights, index, inside = ctx.saved_tensors
        B, C, X, Y = ctx.shape
        grad_values = grad_point = None
        g = grad_out.reshape(B, C, X * Y)
        if ctx.needs_input_grad[1]:
            v00, v01, v10, v11 = gathered.unbind(dim=2)
            wy0, wy1 = w0[:, 1].reshape(B, 1, -1), w1[:, 1].reshape(B, 1, -1)
            wx0, wx1 = w0[:, 0].reshape(B, 1, -1), w1[:, 0].reshape(B, 1, -1)
            d_x = ((v10 - v00) * wy0 + (v11 - v01) * wy1) * g
            d_y = ((v01 - v00) * wx0 + (v11 - v10) * wx1) * g
            grad_point = torch.stack((d_x.sum(dim=1), d_y.sum(dim=1)), dim=1).view(B, 2, X, Y) * inside
        if ctx.needs_input_grad[0]:
            contrib = (g.unsqueeze(2) * weights.view(B, 1, 4, X * Y)).reshape(B, C, 4 * X * Y)
            grad_values = torch.zeros(B, C, X * Y, dtype=g.dtype, device=g.device).scatter_add_(2, index, contrib)
            grad_values = grad_values.view(B, C, X, Y)
        return grad_values, grad_point


def sample_bilinear(values: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Sample ``values (B, C, X, Y)`` at x + u(x), ``displacement (B, 2, X, Y)`` normalised.

    Bilinear, border replication outside the image, differentiable in both
    arguments. A zero displacement returns ``values`` exactly: sample points are
    then integer pixel positions and every other corner's weight is exactly 0.
    """
    B, C, X, Y = values.shape
    if X < 2 or Y < 2:
        raise ValueError(f"images need at least 2 pixels per axis, got {(X, Y)}")
    if displacement.shape != (B, 2, X, Y):
        raise ValueError(f"displacement must have shape {(B, 2, X, Y)}, got {tuple(displacement.shape)}")
    base, scale, *_ = _pixel_frame(X, Y, displacement.dtype, displacement.device)
    return _BilinearSample.apply(values.to(displacement.dtype), base + displacement * scale)


def sample_nearest(values: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour sampling (for labels): round half up, border replication; keeps the dtype."""
    B, C, X, Y = values.shape
    sx, sy = pixel_scale((X, Y))
    ix = torch.arange(X, dtype=displacement.dtype, device=values.device)[:, None]
    iy = torch.arange(Y, dtype=displacement.dtype, device=values.device)[None, :]
    px = torch.floor(ix + displacement[:, 0] * sx + 0.5).clamp(0, X - 1).long()
    py = torch.floor(iy + displacement[:, 1] * sy + 0.5).clamp(0, Y - 1).long()
    index = (px * Y + py).flatten(1).unsqueeze(1).expand(B, C, X * Y)
    return values.flatten(2).gather(2, index).view(B, C, X, Y)


@functools.lru_cache(maxsize=32)
def identity_planes(X: int, Y: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(1, 2, X, Y)`` identity grid with its coordinates as planes (plane 0 along Y; cached, do not modify)."""
    return _identity_grid(X, Y, dtype, device).permute(0, 3, 1, 2).contiguous()


def to_grid(field: torch.Tensor) -> torch.Tensor:
    """Sampling grid ``(B, X, Y, 2)`` of a normalised field ``(B, 2, X, Y)`` whose components are in grid order.

    The grid is a view of a ``(B, 2, X, Y)`` tensor: the addition and each
    coordinate plane ``grid[..., c]`` stay contiguous, which on CPU costs a
    fraction of the same work on interleaved coordinates; ``grid_sample``
    reads either layout equally fast.
    """
    X, Y = field.shape[-2:]
    return (field + identity_planes(X, Y, field.dtype, field.device)).permute(0, 2, 3, 1)


def grid_sample(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``values (B, C, X, Y)`` at ``grid (B, X, Y, 2)``: bilinear, ``align_corners=True``, border replication."""
    return torch.nn.functional.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=True)


def warp_grid_inside(image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image at ``grid`` (:func:`grid_sample`) and the ``(B, 1, X, Y)`` bool mask of grid points inside the image."""
    with torch.no_grad():  # per coordinate plane: contiguous for a :func:`to_grid` grid
        inside = (torch.maximum(grid[..., 0].abs(), grid[..., 1].abs()) <= 1).unsqueeze(1)
    return grid_sample(image, grid), inside


def warp_image(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped moving image M(x + u(x)), bilinear with border replication."""
    return sample_bilinear(image, displacement)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped label map, nearest neighbour (round half up), border replication, dtype kept."""
    return sample_nearest(labels, displacement)

"""2D B-spline free-form deformation in separable matmul form, and warping.

Units: displacements inside the optimiser are *normalised* with
``align_corners=True`` (docs/design.md): coordinate -1 is the centre of the
first pixel, +1 the centre of the last, so 1 unit = (N - 1) / 2 pixels along
an axis of N pixels. Component c of a field ``(B, 2, X, Y)`` is along array
axis c (component 0 along X, component 1 along Y).

The dense field is ``Bx · C · Byᵀ`` per component, with basis matrices
``Bx (X, Kx)`` and ``By (Y, Ky)`` built once per shape: the fastest form on CPU
and the one that batches (REFERENCE.md §4).

Images are sampled by our own bilinear interpolation in pixel coordinates
rather than ``grid_sample``: the identity then samples exactly at integer pixel
positions, so zero parameters reproduce the image bit for bit (``grid_sample``
with a linspace grid is off by float rounding). Sample points outside the image
are clamped onto its border (border replication, as ``grid_sample``'s
``padding_mode="border"``); the image distance ignores such pixels
(:func:`inside_mask`). Scaling and squaring composes fields with
``grid_sample`` (same conventions, faster; a zero field stays exactly zero).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

ORDERS = (1, 3)
"""Supported kernel orders: 1 (tent, as the paper's airlab runs) and 3 (cubic, a standard FFD)."""


def bspline_kernel(t: torch.Tensor, order: int) -> torch.Tensor:
    """Centred B-spline kernel of ``order`` (1 or 3) at ``t`` in units of the control spacing."""
    a = t.abs()
    if order == 1:
        return (1 - a).clamp(min=0)
    if order == 3:
        inner = 2.0 / 3.0 - a**2 + a**3 / 2
        outer = (2 - a).clamp(min=0) ** 3 / 6
        return torch.where(a < 1, inner, outer)
    raise ValueError(f"order must be one of {ORDERS}, got {order}")


def _pad(order: int) -> int:
    """Control points beyond each image end so the kernels sum to one on the whole image."""
    return 1 if order == 3 else 0


def lattice_size(n: int, *, count: int | None = None, spacing_px: float | None = None, order: int = 3) -> tuple[int, float]:
    """Control points and their spacing (px) along an axis of ``n`` pixels.

    Give exactly one of ``count`` (the spacing is chosen so the lattice, with
    one extra point beyond each end for cubic kernels, spans the image) or
    ``spacing_px`` (the count is the smallest that spans the image). The lattice
    is centred on the image.
    """
    if (count is None) == (spacing_px is None):
        raise ValueError("give exactly one of count and spacing_px")
    if n < 2:
        raise ValueError(f"an axis needs at least 2 pixels, got {n}")
    pad = _pad(order)
    if count is not None:
        if count < 2 + 2 * pad:
            raise ValueError(f"order {order} needs at least {2 + 2 * pad} control points per axis, got {count}")
        return count, (n - 1) / (count - 1 - 2 * pad)
    if spacing_px <= 0:
        raise ValueError(f"spacing_px must be positive, got {spacing_px}")
    return math.ceil((n - 1) / spacing_px - 1e-9) + 1 + 2 * pad, float(spacing_px)


def basis_matrix(n: int, count: int, spacing_px: float, order: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(n, count)`` matrix of kernel weights: pixel i, control point k, lattice centred on the image."""
    pixels = torch.arange(n, dtype=torch.float64)
    knots = (n - 1) / 2 + (torch.arange(count, dtype=torch.float64) - (count - 1) / 2) * spacing_px
    weights = bspline_kernel((pixels[:, None] - knots[None, :]) / spacing_px, order)
    return weights.to(dtype=dtype, device=device)


def pixel_scale(shape: Sequence[int]) -> tuple[float, float]:
    """Pixels per normalised unit along each axis: (N - 1) / 2."""
    return ((shape[0] - 1) / 2, (shape[1] - 1) / 2)


def inside_mask(displacement: torch.Tensor) -> torch.Tensor:
    """``(B, 1, X, Y)`` bool: the sample point x + u(x) lies inside the image (pixel coordinates in [0, N - 1])."""
    B, _, X, Y = displacement.shape
    base, scale, lower, upper, *_ = _pixel_frame(X, Y, displacement.dtype, displacement.device)
    point = base + displacement * scale
    inside = (point >= lower) & (point <= upper)
    return inside[:, :1] & inside[:, 1:]


@functools.lru_cache(maxsize=32)
def _identity_grid(X: int, Y: int, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
    gx = torch.linspace(-1, 1, X, dtype=dtype, device=device)
    gy = torch.linspace(-1, 1, Y, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(gx, gy, indexing="ij"))[None]


def identity_grid(shape: Sequence[int], *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(1, 2, X, Y)`` normalised coordinates of the pixel centres, component c along axis c (cached; do not modify)."""
    return _identity_grid(int(shape[0]), int(shape[1]), dtype, torch.device(device) if device is not None else torch.device("cpu"))


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
    def forward(ctx, values: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, X, Y = values.shape
        _, _, lower, upper, last_cell, offsets = _pixel_frame(X, Y, point.dtype, point.device)
        clamped = torch.clamp(point, min=lower, max=upper)
        inside = clamped == point  # (B, 2, X, Y): where the clamp let the gradient through
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
        ctx.mark_non_differentiable(inside)
        return out, inside

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor, _grad_inside: torch.Tensor | None = None):
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


def sample_bilinear_inside(values: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_bilinear` and the ``(B, 1, X, Y)`` bool mask of sample points inside the image."""
    B, C, X, Y = values.shape
    if X < 2 or Y < 2:
        raise ValueError(f"images need at least 2 pixels per axis, got {(X, Y)}")
    if displacement.shape != (B, 2, X, Y):
        raise ValueError(f"displacement must have shape {(B, 2, X, Y)}, got {tuple(displacement.shape)}")
    base, scale, *_ = _pixel_frame(X, Y, displacement.dtype, displacement.device)
    out, inside = _BilinearSample.apply(values.to(displacement.dtype), base + displacement * scale)
    return out, inside[:, :1] & inside[:, 1:]


def sample_bilinear(values: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Sample ``values (B, C, X, Y)`` at x + u(x), ``displacement (B, 2, X, Y)`` normalised.

    Bilinear, border replication outside the image, differentiable in both
    arguments. A zero displacement returns ``values`` exactly: sample points are
    then integer pixel positions and every other corner's weight is exactly 0.
    """
    return sample_bilinear_inside(values, displacement)[0]


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


def compose_grid_sample(u: torch.Tensor) -> torch.Tensor:
    """u(x) + u(x + u(x)) for a normalised field ``(B, 2, X, Y)``, sampled with ``grid_sample``.

    ``align_corners=True`` and border padding, the same conventions as
    :func:`sample_bilinear`; ``grid_sample``'s fused kernel is several times
    faster here. Its identity grid is off by float rounding (~1e-7 px), which
    does not matter inside a composition, and a zero field stays exactly zero.
    """
    X, Y = u.shape[-2:]
    base = identity_grid((X, Y), dtype=u.dtype, device=u.device)
    # grid_sample's grid[..., 0] indexes the last dimension (Y), grid[..., 1] the one before (X).
    grid = torch.stack((base[:, 1] + u[:, 1], base[:, 0] + u[:, 0]), dim=-1)
    return u + torch.nn.functional.grid_sample(u, grid, mode="bilinear", padding_mode="border", align_corners=True)


def scaling_and_squaring(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Displacement exp(v) of a stationary velocity field (normalised units): v / 2^steps, squared ``steps`` times."""
    u = velocity / (2**steps)
    for _ in range(steps):
        u = compose_grid_sample(u)
    return u


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


class BSplineTransform:
    """B-spline FFD on a fixed image shape; parameters ``(B, 2, Kx, Ky)`` in normalised units.

    With ``diffeomorphic=True`` the B-spline field is a stationary velocity
    integrated by scaling and squaring (``squaring_steps``), as airlab's
    ``diffeomorphic=True``. Zero parameters give exactly the identity.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        lattice: Sequence[int] | None = (24, 24),
        control_spacing_px: float | Sequence[float] | None = None,
        order: int = 3,
        diffeomorphic: bool = False,
        squaring_steps: int = 7,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order}")
        if squaring_steps < 1:
            raise ValueError(f"squaring_steps must be at least 1, got {squaring_steps}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.order = order
        self.diffeomorphic = diffeomorphic
        self.squaring_steps = squaring_steps
        if lattice is not None and control_spacing_px is not None:
            raise ValueError("give exactly one of lattice and control_spacing_px")
        sizes = []
        for axis, n in enumerate(self.shape):
            if lattice is not None:
                sizes.append(lattice_size(n, count=int(lattice[axis]), order=order))
            else:
                if control_spacing_px is None:
                    raise ValueError("give exactly one of lattice and control_spacing_px")
                step = control_spacing_px if np.isscalar(control_spacing_px) else control_spacing_px[axis]
                sizes.append(lattice_size(n, spacing_px=float(step), order=order))
        self.lattice = (sizes[0][0], sizes[1][0])
        self.control_spacing_px = (sizes[0][1], sizes[1][1])
        self.basis_x = basis_matrix(self.shape[0], *sizes[0], order, dtype=dtype, device=device)
        self.basis_y_t = basis_matrix(self.shape[1], *sizes[1], order, dtype=dtype, device=device).T.contiguous()

    def zeros(self, batch: int) -> torch.Tensor:
        """Identity parameters for ``batch`` pairs."""
        return torch.zeros(batch, 2, *self.lattice, dtype=self.basis_x.dtype, device=self.basis_x.device)

    def dense(self, params: torch.Tensor) -> torch.Tensor:
        """The B-spline field ``Bx · C · Byᵀ`` (the velocity in diffeomorphic mode), ``(B, 2, X, Y)``."""
        return self.basis_x @ params @ self.basis_y_t

    def displacement(self, params: torch.Tensor) -> torch.Tensor:
        """Dense displacement ``(B, 2, X, Y)`` in normalised units."""
        field = self.dense(params)
        if self.diffeomorphic:
            field = scaling_and_squaring(field, self.squaring_steps)
        return field


def warp_image(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped moving image M(x + u(x)), bilinear with border replication."""
    return sample_bilinear(image, displacement)


def warp_image_inside(image: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`warp_image` and the mask of pixels whose sample point lies inside the image (for the NCC)."""
    return sample_bilinear_inside(image, displacement)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped label map, nearest neighbour (round half up), border replication, dtype kept."""
    return sample_nearest(labels, displacement)

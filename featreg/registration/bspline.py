"""2D B-spline free-form deformation in separable matmul form, and warping.

Units: displacements inside the optimiser are *normalised* with
``align_corners=True`` (docs/design.md): coordinate -1 is the centre of the
first pixel, +1 the centre of the last, so 1 unit = (N - 1) / 2 pixels along
an axis of N pixels. Component c of a field ``(B, 2, X, Y)`` is along array
axis c (component 0 along X, component 1 along Y).

The dense field is ``Bx · C · Byᵀ`` per component, with basis matrices
``Bx (X, Kx)`` and ``By (Y, Ky)`` built once per shape: the fastest form on CPU
and the one that batches (REFERENCE.md §4).

Two samplers with the same conventions (bilinear, ``align_corners=True``,
border replication, zero gradient along an axis where the point is clamped):

- the optimisation loop warps with ``grid_sample`` on a sampling grid
  (:meth:`BSplineTransform.sampling_grid`, :func:`warp_grid_inside`): its fused
  kernel is several times faster on CPU. Its identity grid is off by float
  rounding (~1e-7 px), which does not matter inside the loop; the image
  distance ignores pixels whose sample point lies outside the image.
- final outputs use our own bilinear interpolation in pixel coordinates
  (:func:`sample_bilinear`): the identity then samples exactly at integer pixel
  positions, so zero parameters reproduce the image bit for bit.

Inside the transform, fields are kept with their components in
``grid_sample``'s order (component 0 along Y, the last axis) so a sampling grid
is one addition; :meth:`BSplineTransform.displacement` returns the usual order.
Scaling and squaring composes fields with ``grid_sample`` (a zero field stays
exactly zero).
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


@functools.lru_cache(maxsize=32)
def _identity_grid(X: int, Y: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gx = torch.linspace(-1, 1, X, dtype=dtype, device=device)
    gy = torch.linspace(-1, 1, Y, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(gy, gx, indexing="xy"), dim=-1)[None]


def identity_grid(shape: Sequence[int], *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(1, X, Y, 2)`` ``grid_sample`` grid of the pixel centres: ``[..., 0]`` along Y, ``[..., 1]`` along X (cached; do not modify)."""
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


def to_grid(field: torch.Tensor) -> torch.Tensor:
    """Sampling grid ``(B, X, Y, 2)`` of a normalised field ``(B, 2, X, Y)`` whose components are in grid order."""
    X, Y = field.shape[-2:]
    return identity_grid((X, Y), dtype=field.dtype, device=field.device) + field.permute(0, 2, 3, 1)


def grid_sample(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``values (B, C, X, Y)`` at ``grid (B, X, Y, 2)``: bilinear, ``align_corners=True``, border replication."""
    return torch.nn.functional.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=True)


def warp_grid_inside(image: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image at ``grid`` (:func:`grid_sample`) and the ``(B, 1, X, Y)`` bool mask of grid points inside the image."""
    with torch.no_grad():
        inside = (grid.abs() <= 1).all(dim=-1).unsqueeze(1)
    return grid_sample(image, grid), inside


def scaling_and_squaring(velocity: torch.Tensor, steps: int) -> torch.Tensor:
    """Displacement exp(v) of a stationary velocity ``(B, 2, X, Y)``: v / 2^steps composed with itself ``steps`` times.

    Each step is u(x) + u(x + u(x)); ``velocity`` has its components in grid
    order (:func:`to_grid`), as the transform keeps its fields.
    """
    u = velocity / (2**steps)
    for _ in range(steps):
        u = u + grid_sample(u, to_grid(u))
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
        bx = basis_matrix(self.shape[0], *sizes[0], order, dtype=torch.float64)
        by = basis_matrix(self.shape[1], *sizes[1], order, dtype=torch.float64)
        self.basis_x = bx.to(dtype=dtype, device=device)
        self.basis_y_t = by.T.contiguous().to(dtype=dtype, device=device)
        # Gram matrices of the differenced (Δ) and cropped ([1:]) bases along each axis, for difference_energy.
        grams = [m.T @ m for b in (bx, by) for m in (b[1:] - b[:-1], b[1:])]
        self._grams = [g.to(dtype=dtype, device=device) for g in grams]  # Δx, cropped x, Δy, cropped y

    def zeros(self, batch: int) -> torch.Tensor:
        """Identity parameters for ``batch`` pairs."""
        return torch.zeros(batch, 2, *self.lattice, dtype=self.basis_x.dtype, device=self.basis_x.device)

    def _field_grid_order(self, params: torch.Tensor) -> torch.Tensor:
        """Dense displacement ``(B, 2, X, Y)``, components in grid order (:func:`to_grid`)."""
        field = self.basis_x @ params.flip(1) @ self.basis_y_t
        if self.diffeomorphic:
            field = scaling_and_squaring(field, self.squaring_steps)
        return field

    def displacement(self, params: torch.Tensor) -> torch.Tensor:
        """Dense displacement ``(B, 2, X, Y)`` in normalised units, component c along axis c."""
        return self._field_grid_order(params).flip(1)

    def sampling_grid(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid_sample`` grid ``(B, X, Y, 2)`` of x + u(x), and u in grid order (components reversed).

        The optimisation loop warps with the grid; ``field.flip(1)`` is u as
        :meth:`displacement` returns it, copied only where a regulariser of the
        dense field needs it (diffeomorphic mode), not on every iteration.
        """
        field = self._field_grid_order(params)
        return to_grid(field), field

    def difference_energy(self, params: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_ij weights[i, j] · Σ (Δ_j u_i)²`` per pair, u the (non-diffeomorphic) B-spline field.

        Δ_j is the forward difference along axis j on the crop ``[1:, 1:]``
        (the diffusion regularisers' layout). u_i = Bx · C_i · Byᵀ is linear in
        the parameters, so the sum of squares is the quadratic form
        ``Σ C_i ⊙ (G · C_i · H)`` with Gram matrices of the differenced and
        cropped bases: lattice-sized work instead of image-sized, same value.
        """
        if self.diffeomorphic:
            raise ValueError("difference_energy needs a non-diffeomorphic transform (the field is not linear in the parameters)")
        diff_x, crop_x, diff_y, crop_y = self._grams
        along_x = (diff_x @ params @ crop_y * params).sum(dim=(2, 3))  # (B, 2 components)
        along_y = (crop_x @ params @ diff_y * params).sum(dim=(2, 3))
        return along_x @ weights[:, 0] + along_y @ weights[:, 1]


def warp_image(image: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped moving image M(x + u(x)), bilinear with border replication."""
    return sample_bilinear(image, displacement)


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Warped label map, nearest neighbour (round half up), border replication, dtype kept."""
    return sample_nearest(labels, displacement)

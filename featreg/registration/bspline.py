"""2D B-spline free-form deformation in separable matmul form.

Units: displacements are normalised with ``align_corners=True``
(:mod:`featreg.registration.units`). Component c of a field ``(B, 2, X, Y)`` is along
array axis c (component 0 along X, component 1 along Y).

The dense field is ``Bx · C · Byᵀ`` per component, with basis matrices
``Bx (X, Kx)`` and ``By (Y, Ky)`` built once per shape: the fastest form on CPU
and the one that batches (docs/references.md, "B-spline evaluation"). Warping lives in
:mod:`featreg.registration.sampling`.

Inside the transform, fields are kept with their components in
``grid_sample``'s order (component 0 along Y, the last axis) so a sampling grid
is one addition; :meth:`BSplineTransform.displacement` returns the usual order.
Scaling and squaring composes fields with ``grid_sample`` (a zero field stays
exactly zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from featreg.registration.sampling import grid_sample, to_grid
from featreg.registration.settings import ORDERS, PLACEMENTS, SQUARING_CONVENTIONS


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


def lattice_size(
    n: int, *, count: int | None = None, spacing_px: float | None = None, order: int = 3, placement: str = "centred"
) -> tuple[int, float]:
    """Control points and their spacing (px) along an axis of ``n`` pixels.

    ``centred``: give exactly one of ``count`` (the spacing is chosen so the
    lattice, with one extra point beyond each end for cubic kernels, spans the
    image) or ``spacing_px`` (the count is the smallest that spans the image).
    ``airlab``: give ``spacing_px``, an integer stride (airlab's ``sigma``);
    the count is airlab's ``ceil(n / stride) + 2``.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if (count is None) == (spacing_px is None):
        raise ValueError("give exactly one of count and spacing_px")
    if n < 2:
        raise ValueError(f"an axis needs at least 2 pixels, got {n}")
    if placement == "airlab":
        if spacing_px is None or spacing_px != int(spacing_px) or spacing_px < 1:
            raise ValueError(f"airlab placement takes spacing_px, an integer stride >= 1 (airlab's sigma), got {spacing_px!r}")
        return math.ceil(n / spacing_px) + 2, float(spacing_px)
    pad = _pad(order)
    if count is not None:
        if count < 2 + 2 * pad:
            raise ValueError(f"order {order} needs at least {2 + 2 * pad} control points per axis, got {count}")
        return count, (n - 1) / (count - 1 - 2 * pad)
    if spacing_px <= 0:
        raise ValueError(f"spacing_px must be positive, got {spacing_px}")
    return math.ceil((n - 1) / spacing_px - 1e-9) + 1 + 2 * pad, float(spacing_px)


def knot_positions(n: int, count: int, spacing_px: float, placement: str = "centred") -> torch.Tensor:
    """Pixel positions (float64) of the ``count`` control points along an axis of ``n`` pixels.

    ``centred``: the lattice's centre is the image's. ``airlab``: as airlab's
    ``_KernelTransformation``, whose ``conv_transpose`` output (knot k at index
    ``stride·k``) is cropped from ``stride + crop_start``, with
    ``crop_start = ⌊|d|/2⌋·sign(d) + (d mod 2)·sign(d)`` and
    ``d = stride·ceil(n / stride) - (stride - 1) - n``: for 128 px at stride 6,
    knots at -5, 1, 7, ..., 133.
    """
    k = torch.arange(count, dtype=torch.float64)
    if placement == "centred":
        return (n - 1) / 2 + (k - (count - 1) / 2) * spacing_px
    if placement == "airlab":
        stride = int(spacing_px)
        d = stride * math.ceil(n / stride) - (stride - 1) - n
        sign = (d > 0) - (d < 0)
        crop_start = abs(d) // 2 * sign + d % 2 * sign
        return stride * k - (stride + crop_start)
    raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")


def basis_matrix(
    n: int, count: int, spacing_px: float, order: int, *, placement: str = "centred", dtype=torch.float32, device=None
) -> torch.Tensor:
    """``(n, count)`` matrix of kernel weights: pixel i, control point k at :func:`knot_positions`."""
    pixels = torch.arange(n, dtype=torch.float64)
    knots = knot_positions(n, count, spacing_px, placement)
    weights = bspline_kernel((pixels[:, None] - knots[None, :]) / spacing_px, order)
    return weights.to(dtype=dtype, device=device)


def banded(basis: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A basis matrix ``(n, K)`` as its transpose ``(K, n)`` (float32) and each control point's pixels ``[lo, hi)``.

    Control point k weighs only pixels ``lo[k] <= i < hi[k]`` (empty when lo = hi):
    the fused CPU kernels loop over those runs instead of the whole matrix.
    """
    weights = np.ascontiguousarray(basis.detach().cpu().numpy().astype(np.float32).T)
    nonzero = weights != 0
    used = nonzero.any(axis=1)
    lo = np.where(used, nonzero.argmax(axis=1), 0)
    hi = np.where(used, weights.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
    return weights, lo.astype(np.int64), hi.astype(np.int64)


def scaling_and_squaring(velocity: torch.Tensor, steps: int, convention: str = "exact") -> torch.Tensor:
    """Displacement exp(v) of a stationary velocity ``(B, 2, X, Y)``: v / 2^steps composed with itself ``steps`` times.

    Each step is u(x) + u(x + u(x)); ``velocity`` has its components in grid
    order (:func:`to_grid`), as the transform keeps its fields. ``exact``
    samples u as the warps do (``align_corners=True``, border replication);
    ``airlab`` as airlab's ``Diffeomorphic`` does with current PyTorch
    (``grid_sample``'s defaults: ``align_corners=False`` on the same
    ``linspace(-1, 1)`` grid, zero padding), which shrinks u's sampling
    positions by (N-1)/N about the centre and pulls it towards 0 at the border.
    """
    if convention not in SQUARING_CONVENTIONS:
        raise ValueError(f"convention must be one of {SQUARING_CONVENTIONS}, got {convention!r}")
    u = velocity / (2**steps)
    for _ in range(steps):
        if convention == "exact":
            u = u + grid_sample(u, to_grid(u))
        else:
            u = u + torch.nn.functional.grid_sample(u, to_grid(u), mode="bilinear", padding_mode="zeros", align_corners=False)
    return u


class BSplineTransform:
    """B-spline FFD on a fixed image shape; parameters ``(B, 2, Kx, Ky)`` in normalised units.

    With ``diffeomorphic=True`` the B-spline field is a stationary velocity
    integrated by scaling and squaring (``squaring_steps``, sampled by
    ``squaring_convention``), as airlab's ``diffeomorphic=True``. ``placement``
    puts the control points (:func:`knot_positions`); ``airlab`` takes
    ``control_spacing_px``. Zero parameters give exactly the identity.
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
        squaring_convention: str = "exact",
        placement: str = "centred",
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order}")
        if squaring_steps < 1:
            raise ValueError(f"squaring_steps must be at least 1, got {squaring_steps}")
        if squaring_convention not in SQUARING_CONVENTIONS:
            raise ValueError(f"squaring_convention must be one of {SQUARING_CONVENTIONS}, got {squaring_convention!r}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.order = order
        self.diffeomorphic = diffeomorphic
        self.squaring_steps = squaring_steps
        self.squaring_convention = squaring_convention
        self.placement = placement
        if lattice is not None and control_spacing_px is not None:
            raise ValueError("give exactly one of lattice and control_spacing_px")
        sizes = []
        for axis, n in enumerate(self.shape):
            if lattice is not None:
                sizes.append(lattice_size(n, count=int(lattice[axis]), order=order, placement=placement))
            else:
                if control_spacing_px is None:
                    raise ValueError("give exactly one of lattice and control_spacing_px")
                step = control_spacing_px if np.isscalar(control_spacing_px) else control_spacing_px[axis]
                sizes.append(lattice_size(n, spacing_px=float(step), order=order, placement=placement))
        self.lattice = (sizes[0][0], sizes[1][0])
        self.control_spacing_px = (sizes[0][1], sizes[1][1])
        bx = basis_matrix(self.shape[0], *sizes[0], order, placement=placement, dtype=torch.float64)
        by = basis_matrix(self.shape[1], *sizes[1], order, placement=placement, dtype=torch.float64)
        self.basis_x = bx.to(dtype=dtype, device=device)
        self.basis_y_t = by.T.contiguous().to(dtype=dtype, device=device)
        # The same weights for the fused CPU kernel (kernels.lattice_warped_ncc): Bx as runs, Byᵀ whole.
        self.bands = (*banded(self.basis_x), self.basis_y_t.detach().cpu().numpy().copy())
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
            field = scaling_and_squaring(field, self.squaring_steps, self.squaring_convention)
        return field

    def displacement(self, params: torch.Tensor) -> torch.Tensor:
        """Dense displacement ``(B, 2, X, Y)`` in normalised units, component c along axis c."""
        return self._field_grid_order(params).flip(1)

    def sampling_grid(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid_sample`` grid ``(B, X, Y, 2)`` of x + u(x), and u in grid order (components reversed).

        The optimisation loop warps with the grid; ``field.flip(1)`` is u as
        :meth:`displacement` returns it (the loop's dense regulariser flips its
        weights instead of copying the field).
        """
        field = self._field_grid_order(params)
        return to_grid(field), field

    def difference_energy(self, params: torch.Tensor, weights: torch.Tensor, *, closed_form: bool = False) -> torch.Tensor:
        """``Σ_ij weights[i, j] · Σ (Δ_j u_i)²`` per pair, u the (non-diffeomorphic) B-spline field.

        Δ_j is the forward difference along axis j on the crop ``[1:, 1:]``
        (the diffusion regularisers' layout). u_i = Bx · C_i · Byᵀ is linear in
        the parameters, so the sum of squares is the quadratic form
        ``Σ C_i ⊙ (G · C_i · H)`` with Gram matrices of the differenced and
        cropped bases: lattice-sized work instead of image-sized, same value.
        ``closed_form`` makes it one node with its gradient in closed form (the
        fused CPU NCC loop, where autograd's small ops are a tenth of the
        iteration); otherwise autograd differentiates it, which keeps the other
        paths' results bitwise as they were (the two gradients differ in rounding).
        """
        if self.diffeomorphic:
            raise ValueError("difference_energy needs a non-diffeomorphic transform (the field is not linear in the parameters)")
        if closed_form:
            return _DifferenceEnergy.apply(params, weights, *self._grams)
        # Op by op as before, not through _DifferenceEnergy's forward: autograd adds the gradient
        # up in the order the ops were made, so computing both spreads first changes its rounding.
        diff_x, crop_x, diff_y, crop_y = self._grams
        along_x = (diff_x @ params @ crop_y * params).sum(dim=(2, 3))  # (B, 2 components)
        along_y = (crop_x @ params @ diff_y * params).sum(dim=(2, 3))
        return along_x @ weights[:, 0] + along_y @ weights[:, 1]


class _DifferenceEnergy(torch.autograd.Function):
    """:meth:`BSplineTransform.difference_energy` as one node: its gradient is known in closed form.

    With symmetric Gram matrices, d/dC_i of ``Σ C_i ⊙ (G · C_i · H)`` is ``2 · G · C_i · H``:
    the forward keeps it, so the backward is one product (not autograd's graph of small ops).
    """

    @staticmethod
    def forward(ctx, params, weights, diff_x, crop_x, diff_y, crop_y):
        spread_x = diff_x @ params @ crop_y  # (B, 2 components, Kx, Ky)
        spread_y = crop_x @ params @ diff_y
        along_x = (spread_x * params).sum(dim=(2, 3))  # (B, 2 components)
        along_y = (spread_y * params).sum(dim=(2, 3))
        ctx.save_for_backward(2 * (spread_x * weights[:, 0, None, None] + spread_y * weights[:, 1, None, None]))
        return along_x @ weights[:, 0] + along_y @ weights[:, 1]

    @staticmethod
    def backward(ctx, grad):
        (gradient,) = ctx.saved_tensors
        return grad[:, None, None, None] * gradient, None, None, None, None, None

"""Fused CPU kernel (numba) for the optimisation loop's hot path: warp + masked NCC, with a hand-written backward.

:func:`warped_ncc` warps the moving image at a sampling grid and takes the masked
negative NCC in one pass over the pixels; the backward gives the gradient with
respect to the grid in one more pass. Same maths as ``grid_sample`` (bilinear,
``align_corners=True``, border padding, zero gradient where a coordinate is
clamped) followed by :func:`featreg.registration.losses.ncc` with
:func:`featreg.registration.sampling.warp_grid_inside`'s mask.

Why: on CPU the torch ops spend their time in dispatch and in image-sized
intermediates. The forward also leaves, per pixel, the warped value and its masked
slopes in a :class:`Workspace` (preallocated once per registration), so the backward
reads three contiguous planes instead of gathering from the moving image again. The
price: with stores beside its gathers LLVM no longer vectorises the forward (no
gathers in its machine code), as it did not the old gathering backward; net, an
iteration is a few per cent faster (README). The loops are branch-free; the sums are reassociated
(``fastmath`` reassoc only, no finite-math assumptions) within a row, in float64,
and added row by row: an order fixed by the image size alone. The forward's work is
split over pairs, the backward's (no sums: each pixel's gradient is its own) over
rows of pairs, so results do not depend on the thread count or the batch. Used on
CPU for float32 tensors (:func:`fused_available`); CUDA and other dtypes keep the
torch ops. Scaling and squaring stays on ``grid_sample``: a numba composition step
(gathers plus a scattered backward) measured slower than torch's vectorised kernel.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

FUSED_CPU = True
"""Use the fused kernel for float32 CPU tensors (tests set False to compare with the torch ops)."""

_JIT = dict(parallel=True, cache=True, fastmath={"reassoc"}, nogil=True)


def fused_available(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernel applies: :data:`FUSED_CPU` on, every tensor float32 on CPU."""
    return FUSED_CPU and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def _set_threads() -> None:
    """Run numba's kernels on as many threads as torch uses."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


# Shared by both passes (inlined): the sample point of a pixel and the bilinear value and slopes there.
@numba.njit(inline="always")
def _sample(image, gx, gy, X, Y):
    """Inside flag (0/1), value, d/dx, d/dy (per pixel) and whether the clamp lets x, y move, at grid point (gx, gy)."""
    one = np.float32(1)
    inside = one if (abs(gx) <= one) & (abs(gy) <= one) else np.float32(0)
    ix = (gx + one) * np.float32((X - 1) / 2)
    iy = (gy + one) * np.float32((Y - 1) / 2)
    free_x = np.float32(1) if (ix > 0) & (ix < np.float32(X - 1)) else np.float32(0)
    free_y = np.float32(1) if (iy > 0) & (iy < np.float32(Y - 1)) else np.float32(0)
    ix = ix if ix > 0 else np.float32(0)  # also maps NaN to 0: indices stay inside the image
    iy = iy if iy > 0 else np.float32(0)
    ix = ix if ix < np.float32(X - 1) else np.float32(X - 1)
    iy = iy if iy < np.float32(Y - 1) else np.float32(Y - 1)
    x0 = min(np.int32(ix), X - 2)
    y0 = min(np.int32(iy), Y - 2)
    wx = ix - np.float32(x0)
    wy = iy - np.float32(y0)
    v00, v01 = image[x0, y0], image[x0, y0 + 1]
    v10, v11 = image[x0 + 1, y0], image[x0 + 1, y0 + 1]
    top = v00 + (v01 - v00) * wy
    bottom = v10 + (v11 - v10) * wy
    value = top + (bottom - top) * wx
    d_x = bottom - top
    d_y = (v01 - v00) + ((v11 - v10) - (v01 - v00)) * wx
    return inside, value, d_x, d_y, free_x, free_y


@numba.njit(**_JIT)
def _ncc_forward(fixed, moving, planes, sums, stash):
    """Per pair: count, Σf, Σw, Σf², Σw², Σfw (float64) over the pixels whose sample point is inside.

    ``stash[b]`` gets, per pixel, the warped value and its slopes along y and x, zero
    where the pixel is outside or the clamp holds the coordinate: all the backward needs.
    """
    B, _, X, Y = fixed.shape
    for b in numba.prange(B):
        image, fix, plane_y, plane_x = moving[b, 0], fixed[b, 0], planes[b, 0], planes[b, 1]
        warped, slope_y, slope_x = stash[b, 0], stash[b, 1], stash[b, 2]
        totals = np.zeros(6)
        for i in range(X):
            n = sf = sw = sff = sww = sfw = 0.0
            for j in range(Y):
                inside, w, d_x, d_y, free_x, free_y = _sample(image, plane_x[i, j], plane_y[i, j], X, Y)
                warped[i, j] = w
                slope_y[i, j] = d_y * free_y * inside
                slope_x[i, j] = d_x * free_x * inside
                w = np.float64(w * inside)
                f = np.float64(fix[i, j] * inside)
                n += inside
                sf += f
                sw += w
                sff += f * f
                sww += w * w
                sfw += f * w
            totals[0] += n
            totals[1] += sf
            totals[2] += sw
            totals[3] += sff
            totals[4] += sww
            totals[5] += sfw
        sums[b] = totals


@numba.njit(**_JIT)
def _ncc_backward(fixed, stash, coefficients, grad_planes):
    """``grad_planes`` = dL/dgrid, with dL/dw = a·f - c·w + d on the inside pixels (``coefficients[b] = a, c, d``).

    Reads the forward's ``stash`` (no gathers). Each pixel's gradient is its own: rows
    are split over the threads (a single pair uses them all).
    """
    B, _, X, Y = fixed.shape
    half_x, half_y = np.float32((X - 1) / 2), np.float32((Y - 1) / 2)
    for row in numba.prange(B * X):
        b = row // X
        i = row - b * X
        fix, warped, slope_y, slope_x = fixed[b, 0, i], stash[b, 0, i], stash[b, 1, i], stash[b, 2, i]
        grad_y, grad_x = grad_planes[b, 0, i], grad_planes[b, 1, i]
        a, c, d = np.float32(coefficients[b, 0]), np.float32(coefficients[b, 1]), np.float32(coefficients[b, 2])
        for j in range(Y):
            g = a * fix[j] - c * warped[j] + d
            grad_y[j] = g * slope_y[j] * half_y
            grad_x[j] = g * slope_x[j] * half_x


class Workspace:
    """Buffers of the fused kernel, allocated on first use and reused while the batch shape holds.

    One registration loop owns one: each forward overwrites what the previous
    iteration's backward read, so a forward's backward must run before the next forward.
    """

    def __init__(self) -> None:
        self._shape: tuple[int, ...] | None = None

    def buffers(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The forward's stash ``(B, 3, X, Y)`` and its sums ``(B, 6)`` for images ``(B, 1, X, Y)``.

        The gradient is not among them: autograd may keep the tensor a backward returns
        (a leaf's ``.grad``), so each backward writes a fresh one.
        """
        if shape != self._shape:
            B, _, X, Y = shape
            self.stash = np.empty((B, 3, X, Y), dtype=np.float32)
            self.sums = np.empty((B, 6), dtype=np.float64)
            self._shape = shape
        return self.stash, self.sums


class _WarpedNCC(torch.autograd.Function):
    """Negative masked NCC of ``fixed`` and ``moving`` warped at ``planes`` (gradient for ``planes`` only)."""

    @staticmethod
    def forward(ctx, fixed: torch.Tensor, moving: torch.Tensor, planes: torch.Tensor, workspace: Workspace) -> torch.Tensor:
        _set_threads()
        stash, sums = workspace.buffers(tuple(fixed.shape))
        _ncc_forward(fixed.numpy(), moving.numpy(), planes.detach().numpy(), sums, stash)
        n, s_f, s_w, s_ff, s_ww, s_fw = (sums[:, k] for k in range(6))
        count = np.maximum(n, 1.0)
        mean_f, mean_w = s_f / count, s_w / count
        var_f = np.maximum(s_ff - s_f * mean_f, 0.0)  # Σ(f - f̄)² over the inside pixels
        var_w = np.maximum(s_ww - s_w * mean_w, 0.0)
        cross = s_fw - s_f * mean_w
        denominator = np.sqrt(var_f * var_w + 1e-10)
        ctx.save_for_backward(fixed)
        ctx.stash = stash
        ctx.moments = (mean_f, mean_w, var_f, var_w, cross, denominator)
        return torch.from_numpy((-cross / denominator).astype(np.float32))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (fixed,) = ctx.saved_tensors
        mean_f, mean_w, var_f, var_w, cross, denominator = ctx.moments
        g = -grad.double().numpy() / denominator
        # dL/dw = g·(fc - k·wc), k = cross·var_f/D², as losses._NegativeNCC: a·f - c·w + d
        k = g * cross * var_f / denominator**2
        coefficients = np.stack((g, k, k * mean_w - g * mean_f), axis=1)
        grad_planes = np.empty((fixed.shape[0], 2, *fixed.shape[2:]), dtype=np.float32)
        _set_threads()
        _ncc_backward(fixed.numpy(), ctx.stash, coefficients, grad_planes)
        return None, None, torch.from_numpy(grad_planes), None


def warped_ncc(
    fixed: torch.Tensor, moving: torch.Tensor, planes: torch.Tensor, workspace: Workspace | None = None
) -> torch.Tensor:
    """Negative NCC per pair of ``fixed`` and ``moving`` (``(B, 1, X, Y)``) warped at ``planes``.

    ``planes (B, 2, X, Y)`` is a sampling grid with its coordinates as planes (plane 0
    along Y), i.e. ``to_grid(field).permute(0, 3, 1, 2)``. Equal (to float rounding)
    to ``ncc(fixed, *warp_grid_inside(moving, grid))``; differentiable in ``planes``.
    A loop passes its :class:`Workspace` (no image-sized allocations per iteration but the gradient); None uses a fresh one.
    """
    if fixed.shape != moving.shape or fixed.shape[1] != 1:
        raise ValueError(f"fixed and moving must both have shape (B, 1, X, Y), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    if planes.shape != (fixed.shape[0], 2, *fixed.shape[2:]):
        raise ValueError(f"planes must have shape {(fixed.shape[0], 2, *fixed.shape[2:])}, got {tuple(planes.shape)}")
    return _WarpedNCC.apply(fixed.contiguous(), moving.contiguous(), planes.contiguous(), workspace or Workspace())

"""Fused CPU kernels (numba) for the optimisation loop's hot path: B-spline field, warp and masked NCC, with hand-written backwards.

:func:`lattice_warped_ncc` is the NCC loop's one node: from the control points it
evaluates the B-spline field row by row (separably: each row mixes the few lattice
rows that weigh it, then spreads them along Y), warps the moving image there and
takes the masked negative NCC; its backward takes the gradient back onto the
lattice the same way. No dense field, grid or image-sized tensor reaches torch.
:func:`warped_ncc` does warp + NCC at a given sampling grid (after scaling and
squaring, whose dense field it needs). Same maths as ``grid_sample`` (bilinear,
``align_corners=True``, border padding, zero gradient where a coordinate is
clamped) followed by :func:`featreg.registration.losses.ncc` with
:func:`featreg.registration.sampling.warp_grid_inside`'s mask, and as the
transform's matmul field ``Bx · C · Byᵀ``.

Why: on CPU the torch ops spend their time in dispatch and in image-sized
intermediates. The forward leaves, per pixel, the warped value and its masked
slopes in a :class:`Workspace` (preallocated once per registration), so the backward
reads three contiguous planes instead of gathering from the moving image again.
Work is split over rows of pairs (a single pair uses every thread); the NCC sums are
reassociated (``fastmath`` reassoc only, no finite-math assumptions) within a row, in
float64, and the rows added first to last: an order fixed by the image size alone, so
results do not depend on the thread count or the batch. Used on CPU for float32
tensors (:func:`fused_available`); CUDA and other dtypes keep the torch ops. Scaling
and squaring stays on ``grid_sample``: a numba composition step (gathers plus a
scattered backward) measured slower than torch's vectorised kernel.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch

from featreg.registration.sampling import identity_planes

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
def _ncc_forward(fixed, moving, planes, row_sums, stash):
    """Per pair and row: count, Σf, Σw, Σf², Σw², Σfw (float64) over the pixels whose sample point is inside.

    ``stash[b]`` gets, per pixel, the warped value and its slopes along y and x, zero
    where the pixel is outside or the clamp holds the coordinate: all the backward needs.
    Rows are split over the threads (a single pair uses them all); :func:`_add_rows`
    then sums each pair's rows in order.
    """
    B, _, X, Y = fixed.shape
    for row in numba.prange(B * X):
        b = row // X
        i = row - b * X
        image, fix, plane_y, plane_x = moving[b, 0], fixed[b, 0, i], planes[b, 0, i], planes[b, 1, i]
        warped, slope_y, slope_x = stash[b, 0, i], stash[b, 1, i], stash[b, 2, i]
        n = sf = sw = sff = sww = sfw = 0.0
        for j in range(Y):
            inside, w, d_x, d_y, free_x, free_y = _sample(image, plane_x[j], plane_y[j], X, Y)
            warped[j] = w
            slope_y[j] = d_y * free_y * inside
            slope_x[j] = d_x * free_x * inside
            w = np.float64(w * inside)
            f = np.float64(fix[j] * inside)
            n += inside
            sf += f
            sw += w
            sff += f * f
            sww += w * w
            sfw += f * w
        sums = row_sums[b, i]
        sums[0], sums[1], sums[2], sums[3], sums[4], sums[5] = n, sf, sw, sff, sww, sfw


@numba.njit(cache=True, nogil=True)
def _add_rows(row_sums, sums):
    """``sums[b]`` = the rows of ``row_sums[b]`` added first to last: an order fixed by the image size."""
    B, X, K = row_sums.shape
    for b in range(B):
        for k in range(K):
            total = 0.0
            for i in range(X):
                total += row_sums[b, i, k]
            sums[b, k] = total


@numba.njit(inline="always")
def _gradient_row(X, fix, warped, slope_y, slope_x, coefficients, grad_y, grad_x):
    """One row of dL/dgrid, both planes, from the forward's stash rows and ``coefficients = a, c, d`` (images of X rows)."""
    half_x, half_y = np.float32((X - 1) / 2), np.float32((fix.shape[0] - 1) / 2)
    a, c, d = np.float32(coefficients[0]), np.float32(coefficients[1]), np.float32(coefficients[2])
    for j in range(fix.shape[0]):
        g = a * fix[j] - c * warped[j] + d
        grad_y[j] = g * slope_y[j] * half_y
        grad_x[j] = g * slope_x[j] * half_x


@numba.njit(**_JIT)
def _ncc_backward(fixed, stash, coefficients, grad_planes):
    """``grad_planes`` = dL/dgrid, with dL/dw = a·f - c·w + d on the inside pixels (``coefficients[b] = a, c, d``).

    Reads the forward's ``stash`` (no gathers). Each pixel's gradient is its own: rows
    are split over the threads (a single pair uses them all).
    """
    B, _, X, Y = fixed.shape
    for row in numba.prange(B * X):
        b = row // X
        i = row - b * X
        _gradient_row(X, fixed[b, 0, i], stash[b, 0, i], stash[b, 1, i], stash[b, 2, i], coefficients[b], grad_planes[b, 0, i], grad_planes[b, 1, i])


# The lattice path: the B-spline field evaluated in the kernels, separably. Along X, each
# control point weighs a run of rows (``weights_x (Kx, X)`` with runs ``[lo_x, hi_x)``,
# bspline.banded); along Y the basis is used whole (``weights_y (Ky, Y)``): a loop over
# all Y pixels vectorises, where loops over the short runs cost more than the zeros.
@numba.njit(**_JIT)
def _lattice_planes(params, weights_x, lo_x, hi_x, weights_y, line_x, line_y, mixed, planes):
    """``planes`` = identity + the B-spline field of ``params (B, 2, Kx, Ky)``, plane 0 along Y.

    Component c of ``params`` is along axis c, so plane 0 holds component 1. Row i of a
    plane mixes the lattice rows that weigh it (into ``mixed``, ``Ky`` values), then
    adds each column's basis row times its value: float32, in a fixed order.
    """
    B, _, Kx, Ky = params.shape
    X, Y = weights_x.shape[1], weights_y.shape[1]
    for task in numba.prange(B * 2 * X):
        b = task // (2 * X)
        plane = (task - b * 2 * X) // X
        i = task - b * 2 * X - plane * X
        coefficients, row = params[b, 1 - plane], mixed[b, plane, i]
        row[:] = 0
        for k in range(Kx):
            if (lo_x[k] <= i) & (i < hi_x[k]):
                weight, source = weights_x[k, i], coefficients[k]
                for m in range(Ky):
                    row[m] += weight * source[m]
        out = planes[b, plane, i]
        out[:] = 0
        m = 0
        while m + 4 <= Ky:  # four columns per pass over the row: a quarter of the loads and stores
            v0, v1, v2, v3 = row[m], row[m + 1], row[m + 2], row[m + 3]
            w0, w1, w2, w3 = weights_y[m], weights_y[m + 1], weights_y[m + 2], weights_y[m + 3]
            for j in range(Y):
                out[j] += (w0[j] * v0 + w1[j] * v1) + (w2[j] * v2 + w3[j] * v3)
            m += 4
        for m in range(m, Ky):
            value, spread = row[m], weights_y[m]
            for j in range(Y):
                out[j] += spread[j] * value
        if plane == 0:
            for j in range(Y):
                out[j] += line_y[j]
        else:
            offset = line_x[i]
            for j in range(Y):
                out[j] += offset


@numba.njit(**_JIT)
def _lattice_ncc_backward(fixed, stash, coefficients, weights_y, grad_planes, projected):
    """``projected[b, p, i, m]`` = Σ_j weights_y[m, j]·dL/dplane_p[i, j]: each row of the gradient onto the lattice's columns.

    The per-pixel gradient is :func:`_gradient_row`'s (into ``grad_planes``, a
    scratch buffer); rows are split over the threads.
    """
    B, _, X, Y = fixed.shape
    Ky = weights_y.shape[0]
    for row in numba.prange(B * X):
        b = row // X
        i = row - b * X
        grad_y, grad_x = grad_planes[b, 0, i], grad_planes[b, 1, i]
        _gradient_row(X, fixed[b, 0, i], stash[b, 0, i], stash[b, 1, i], stash[b, 2, i], coefficients[b], grad_y, grad_x)
        out_y, out_x = projected[b, 0, i], projected[b, 1, i]
        for m in range(Ky):
            spread = weights_y[m]
            total_y = total_x = np.float32(0)
            for j in range(Y):
                total_y += spread[j] * grad_y[j]
                total_x += spread[j] * grad_x[j]
            out_y[m], out_x[m] = total_y, total_x


@numba.njit(**_JIT)
def _lattice_adjoint(projected, weights_x, lo_x, hi_x, grad):
    """``grad[b, c, k]`` = Σ_i weights_x[k, i]·projected[b, 1 - c, i] over control point k's rows."""
    B, _, Kx, Ky = grad.shape
    for task in numba.prange(B * 2 * Kx):
        b = task // (2 * Kx)
        c = (task - b * 2 * Kx) // Kx
        k = task - b * 2 * Kx - c * Kx
        out, source, weights = grad[b, c, k], projected[b, 1 - c], weights_x[k]
        out[:] = 0
        for i in range(lo_x[k], hi_x[k]):
            weight = weights[i]
            for m in range(Ky):
                out[m] += weight * source[i, m]


class Workspace:
    """Buffers of the fused kernels, allocated on first use and reused while their shapes hold.

    One registration loop owns one: each forward overwrites what the previous
    iteration's backward read, so a forward's backward must run before the next
    forward. No gradient lives here: autograd may keep the tensor a backward returns
    (a leaf's ``.grad``), so each backward writes a fresh one.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        """The buffer ``name`` of ``shape`` and ``dtype`` (contents undefined)."""
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype=dtype)
        return array


def _forward_ncc(ctx, fixed: np.ndarray, moving: np.ndarray, planes: np.ndarray, workspace: Workspace) -> torch.Tensor:
    """Both nodes' forward after their planes: the kernel's sums, the loss, and what the backward needs on ``ctx``."""
    B, _, X, Y = fixed.shape
    stash = workspace.array("stash", (B, 3, X, Y))
    row_sums = workspace.array("row_sums", (B, X, 6), np.float64)
    sums = workspace.array("sums", (B, 6), np.float64)
    _ncc_forward(fixed, moving, planes, row_sums, stash)
    _add_rows(row_sums, sums)
    n, s_f, s_w, s_ff, s_ww, s_fw = (sums[:, k] for k in range(6))
    count = np.maximum(n, 1.0)
    mean_f, mean_w = s_f / count, s_w / count
    var_f = np.maximum(s_ff - s_f * mean_f, 0.0)  # Σ(f - f̄)² over the inside pixels
    var_w = np.maximum(s_ww - s_w * mean_w, 0.0)
    cross = s_fw - s_f * mean_w
    denominator = np.sqrt(var_f * var_w + 1e-10)
    ctx.stash = stash
    ctx.moments = (mean_f, mean_w, var_f, cross, denominator)
    return torch.from_numpy((-cross / denominator).astype(np.float32))


def _coefficients(ctx, grad: torch.Tensor) -> np.ndarray:
    """Per pair ``a, c, d`` of dL/dw = a·f - c·w + d (as losses._NegativeNCC: g·(fc - k·wc), k = cross·var_f/D²)."""
    mean_f, mean_w, var_f, cross, denominator = ctx.moments
    g = -grad.double().numpy() / denominator
    k = g * cross * var_f / denominator**2
    return np.stack((g, k, k * mean_w - g * mean_f), axis=1)


class _WarpedNCC(torch.autograd.Function):
    """Negative masked NCC of ``fixed`` and ``moving`` warped at ``planes`` (gradient for ``planes`` only)."""

    @staticmethod
    def forward(ctx, fixed: torch.Tensor, moving: torch.Tensor, planes: torch.Tensor, workspace: Workspace) -> torch.Tensor:
        _set_threads()
        ctx.save_for_backward(fixed)
        return _forward_ncc(ctx, fixed.numpy(), moving.numpy(), planes.detach().numpy(), workspace)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (fixed,) = ctx.saved_tensors
        grad_planes = np.empty((fixed.shape[0], 2, *fixed.shape[2:]), dtype=np.float32)
        _set_threads()
        _ncc_backward(fixed.numpy(), ctx.stash, _coefficients(ctx, grad), grad_planes)
        return None, None, torch.from_numpy(grad_planes), None


@functools.lru_cache(maxsize=32)
def _identity_lines(X: int, Y: int) -> tuple[np.ndarray, np.ndarray]:
    """The identity grid's coordinates along X and along Y (the values of :func:`~featreg.registration.sampling.identity_planes`)."""
    planes = identity_planes(X, Y, torch.float32, torch.device("cpu"))
    return planes[0, 1, :, 0].numpy().copy(), planes[0, 0, 0, :].numpy().copy()


class _LatticeNCC(torch.autograd.Function):
    """Negative masked NCC of ``fixed`` and ``moving`` warped by the B-spline field of ``params`` (gradient for ``params``)."""

    @staticmethod
    def forward(ctx, fixed, moving, params, bands, workspace):
        _set_threads()
        B, _, X, Y = fixed.shape
        planes = workspace.array("planes", (B, 2, X, Y))
        mixed = workspace.array("mixed", (B, 2, X, params.shape[3]))
        _lattice_planes(params.detach().numpy(), *bands, *_identity_lines(X, Y), mixed, planes)
        ctx.save_for_backward(fixed)
        ctx.bands, ctx.workspace, ctx.lattice = bands, workspace, tuple(params.shape[2:])
        return _forward_ncc(ctx, fixed.numpy(), moving.numpy(), planes, workspace)

    @staticmethod
    def backward(ctx, grad):
        (fixed,) = ctx.saved_tensors
        B, _, X, Y = fixed.shape
        weights_x, lo_x, hi_x, weights_y = ctx.bands
        grad_planes = ctx.workspace.array("grad_planes", (B, 2, X, Y))  # scratch: the node returns grad_params
        projected = ctx.workspace.array("projected", (B, 2, X, ctx.lattice[1]))
        grad_params = np.empty((B, 2, *ctx.lattice), dtype=np.float32)
        _set_threads()
        _lattice_ncc_backward(fixed.numpy(), ctx.stash, _coefficients(ctx, grad), weights_y, grad_planes, projected)
        _lattice_adjoint(projected, weights_x, lo_x, hi_x, grad_params)
        return None, None, torch.from_numpy(grad_params), None, None


def _check_images(fixed: torch.Tensor, moving: torch.Tensor) -> None:
    if fixed.shape != moving.shape or fixed.shape[1] != 1:
        raise ValueError(f"fixed and moving must both have shape (B, 1, X, Y), got {tuple(fixed.shape)} and {tuple(moving.shape)}")


def warped_ncc(
    fixed: torch.Tensor, moving: torch.Tensor, planes: torch.Tensor, workspace: Workspace | None = None
) -> torch.Tensor:
    """Negative NCC per pair of ``fixed`` and ``moving`` (``(B, 1, X, Y)``) warped at ``planes``.

    ``planes (B, 2, X, Y)`` is a sampling grid with its coordinates as planes (plane 0
    along Y), i.e. ``to_grid(field).permute(0, 3, 1, 2)``. Equal (to float rounding)
    to ``ncc(fixed, *warp_grid_inside(moving, grid))``; differentiable in ``planes``.
    A loop passes its :class:`Workspace` (no image-sized allocations per iteration but the gradient); None uses a fresh one.
    """
    _check_images(fixed, moving)
    if planes.shape != (fixed.shape[0], 2, *fixed.shape[2:]):
        raise ValueError(f"planes must have shape {(fixed.shape[0], 2, *fixed.shape[2:])}, got {tuple(planes.shape)}")
    return _WarpedNCC.apply(fixed.contiguous(), moving.contiguous(), planes.contiguous(), workspace or Workspace())


def lattice_warped_ncc(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    params: torch.Tensor,
    bands: tuple[np.ndarray, ...],
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Negative NCC per pair of ``fixed`` and ``moving`` (``(B, 1, X, Y)``) warped by the B-spline field of ``params``.

    ``params (B, 2, Kx, Ky)`` are a non-diffeomorphic
    :class:`~featreg.registration.bspline.BSplineTransform`'s, ``bands`` its
    :attr:`~featreg.registration.bspline.BSplineTransform.bands`. Equal (to float
    rounding) to :func:`warped_ncc` at its sampling grid; differentiable in ``params``.
    No dense field or grid tensor is made, forward or backward.
    """
    _check_images(fixed, moving)
    B, _, X, Y = fixed.shape
    weights_x, _, _, weights_y = bands
    if params.ndim != 4 or params.shape[:2] != (B, 2):
        raise ValueError(f"params must have shape ({B}, 2, Kx, Ky), got {tuple(params.shape)}")
    bands_shape = (weights_x.shape[1], weights_y.shape[1], weights_x.shape[0], weights_y.shape[0])
    if bands_shape != (X, Y, *params.shape[2:]):
        raise ValueError(
            f"bands are for {bands_shape[0]}x{bands_shape[1]} images and {bands_shape[2]}x{bands_shape[3]} control points, "
            f"got {X}x{Y} images and params {tuple(params.shape)}"
        )
    return _LatticeNCC.apply(fixed.contiguous(), moving.contiguous(), params.contiguous(), bands, workspace or Workspace())


# The warped feature map (encode: once): cells sample a channels-last map, one pass over the
# channels gives the cell's distance and its derivatives along both axes.
COSINE, L1 = 0, 1
"""Feature distances of :func:`warped_feature_distance`'s kernel, by number."""


@numba.njit(inline="always")
def _bilinear_channel(v00, v01, v10, v11, c, wx, wy):
    """Channel ``c`` of the bilinear sample of four corners at (wx, wy), and its derivatives along x and y."""
    a, b = v01[c] - v00[c], v11[c] - v10[c]
    top = v00[c] + a * wy
    d_x = v10[c] + b * wy - top
    return top + d_x * wx, d_x, a + (b - a) * wx


@numba.njit(inline="always")
def _cosine_cell(f, v00, v01, v10, v11, wx, wy, eps):
    """Cosine of ``f`` and the bilinear sample of the corners at (wx, wy), and its derivatives along x and y.

    As torch's ``cosine_similarity``: each norm clamped at ``eps`` (where the clamp holds, no gradient through it).
    """
    fw = ww = ff = f_dx = f_dy = w_dx = w_dy = np.float32(0)
    for c in range(f.shape[0]):
        w, d_x, d_y = _bilinear_channel(v00, v01, v10, v11, c, wx, wy)
        fw += f[c] * w
        ww += w * w
        ff += f[c] * f[c]
        f_dx += f[c] * d_x
        f_dy += f[c] * d_y
        w_dx += w * d_x
        w_dy += w * d_y
    norm_f, norm_w = max(np.sqrt(ff), eps), max(np.sqrt(ww), eps)
    value = fw / (norm_f * norm_w)
    held = value / (norm_w * norm_w) if np.sqrt(ww) > eps else np.float32(0)
    return value, f_dx / (norm_f * norm_w) - held * w_dx, f_dy / (norm_f * norm_w) - held * w_dy


@numba.njit(inline="always")
def _l1_cell(f, v00, v01, v10, v11, wx, wy):
    """Mean |f - w| over channels, w the bilinear sample at (wx, wy), and its derivatives (sign(0) = 0, as torch's abs)."""
    total = g_x = g_y = np.float32(0)
    for c in range(f.shape[0]):
        w, d_x, d_y = _bilinear_channel(v00, v01, v10, v11, c, wx, wy)
        diff = f[c] - w
        total += abs(diff)
        sign = np.float32((diff > 0) - (diff < 0))
        g_x -= sign * d_x
        g_y -= sign * d_y
    n = np.float32(f.shape[0])
    return total / n, g_x / n, g_y / n


@numba.njit(**_JIT)
def _feature_forward(fixed, moving, points, distance, factors, eps, row_sums, stash):
    """Per pair and row of cells: Σ over inside cells of the cell's value (cosine or mean |f - w|) and the count.

    ``fixed``, ``moving`` are ``(B, gx, gy, C)``; ``points (B, 2, gx, gy)`` image-normalised
    sample points (plane 0 along Y). The map is sampled as ``grid_sample`` (bilinear,
    ``align_corners=False`` at x·(N-1)/N, border padding, zero gradient where clamped) would;
    ``factors`` are (N-1)/N along X and Y, then the chain factors (N-1)/N·g/2 from a map
    coordinate's derivative to the point's. ``stash[b]`` gets each inside cell's derivative
    of its value along y and x (zero outside).
    """
    B, gx, gy, _ = fixed.shape
    half_x, half_y = np.float64(gx / 2), np.float64(gy / 2)
    last_x, last_y = np.float32(gx - 1), np.float32(gy - 1)
    zero, one = np.float32(0), np.float32(1)
    for row in numba.prange(B * gx):
        b = row // gx
        i = row - b * gx
        plane_y, plane_x, slope_y, slope_x = points[b, 0, i], points[b, 1, i], stash[b, 0, i], stash[b, 1, i]
        total = count = 0.0
        for j in range(gy):
            px, py = plane_x[j], plane_y[j]
            inside = (abs(px) <= one) & (abs(py) <= one)
            if not inside:
                slope_y[j] = slope_x[j] = zero
                continue
            # grid_sample's CPU unnormalisation (c + 1)·g/2 - 1/2, its multiply-add rounded once (as its fused
            # multiply-add): at the identity cells sit exactly on cell centres, where the rounding picks the side
            # whose slope the gradient takes
            ix = np.float32(np.float64(px * factors[0] + one) * half_x - 0.5)
            iy = np.float32(np.float64(py * factors[1] + one) * half_y - 0.5)
            free_x = one if (ix > zero) & (ix < last_x) else zero
            free_y = one if (iy > zero) & (iy < last_y) else zero
            ix = min(max(ix, zero), last_x)
            iy = min(max(iy, zero), last_y)
            x0 = min(np.int32(ix), gx - 2)
            y0 = min(np.int32(iy), gy - 2)
            wx = ix - np.float32(x0)
            wy = iy - np.float32(y0)
            f, v00, v01 = fixed[b, i, j], moving[b, x0, y0], moving[b, x0, y0 + 1]
            v10, v11 = moving[b, x0 + 1, y0], moving[b, x0 + 1, y0 + 1]
            if distance == COSINE:
                value, grad_x, grad_y = _cosine_cell(f, v00, v01, v10, v11, wx, wy, eps)
            else:
                value, grad_x, grad_y = _l1_cell(f, v00, v01, v10, v11, wx, wy)
            slope_x[j] = grad_x * free_x * factors[2]
            slope_y[j] = grad_y * free_y * factors[3]
            total += value
            count += 1.0
        row_sums[b, i, 0], row_sums[b, i, 1] = total, count


class _WarpedFeatures(torch.autograd.Function):
    """Masked feature distance of ``fixed`` and ``moving`` maps, the latter sampled at ``points`` (gradient for ``points``)."""

    @staticmethod
    def forward(ctx, fixed, moving, points, distance, image_shape, workspace):
        _set_threads()
        B, gx, gy, _ = fixed.shape
        X, Y = image_shape
        stash = workspace.array("feature_stash", (B, 2, gx, gy))
        row_sums = workspace.array("feature_rows", (B, gx, 2), np.float64)
        factors = np.array([(X - 1) / X, (Y - 1) / Y, (X - 1) / X * gx / 2, (Y - 1) / Y * gy / 2], dtype=np.float32)
        _feature_forward(fixed.numpy(), moving.numpy(), points.detach().numpy(), distance, factors, np.float32(1e-8), row_sums, stash)
        total, count = row_sums[:, :, 0].sum(axis=1), np.maximum(row_sums[:, :, 1].sum(axis=1), 1.0)
        sign = -1.0 if distance == COSINE else 1.0
        ctx.scale = sign / count
        ctx.stash = stash
        return torch.from_numpy((sign * total / count).astype(np.float32))

    @staticmethod
    def backward(ctx, grad):
        scale = torch.from_numpy((grad.double().numpy() * ctx.scale).astype(np.float32)).view(-1, 1, 1, 1)
        return None, None, torch.from_numpy(ctx.stash) * scale, None, None, None


def warped_feature_distance(
    fixed: torch.Tensor, moving: torch.Tensor, points: torch.Tensor, image_shape: tuple[int, int], distance: str,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """Feature distance per pair of ``fixed`` and ``moving`` maps ``(B, C, gx, gy)``, the latter warped to ``points``.

    ``points (B, 2, gx, gy)`` are :func:`~featreg.registration.sampling.feature_points`'
    (image-normalised, plane 0 along Y) on an image of ``image_shape``. Equal (to float
    rounding) to ``distance`` (``cosine`` or ``l1``) of :mod:`featreg.registration.losses` on
    :func:`~featreg.registration.sampling.warp_features`' map and mask; differentiable in
    ``points``. The maps are read channels-last: stored so
    (``torch.channels_last``), they are not copied.
    """
    if fixed.shape != moving.shape or fixed.ndim != 4:
        raise ValueError(f"fixed and moving features must share a shape (B, C, gx, gy), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    B, _, gx, gy = fixed.shape
    if min(gx, gy) < 2:
        raise ValueError(f"feature maps need at least 2 cells per axis, got {(gx, gy)}")
    if points.shape != (B, 2, gx, gy):
        raise ValueError(f"points must have shape {(B, 2, gx, gy)}, got {tuple(points.shape)}")
    codes = {"cosine": COSINE, "l1": L1}
    if distance not in codes:
        raise ValueError(f"distance must be one of {sorted(codes)}, got {distance!r}")
    return _WarpedFeatures.apply(
        fixed.permute(0, 2, 3, 1).contiguous(), moving.permute(0, 2, 3, 1).contiguous(), points.contiguous(), codes[distance],
        tuple(int(n) for n in image_shape), workspace or Workspace(),
    )

"""Batched B-spline FFD registration: B pairs optimised jointly, each on its own Adam trajectory.

The loss that is back-propagated is the sum over pairs of each pair's
objective, and a pair's parameters only enter its own objective; Adam is
element-wise, so each pair follows exactly the trajectory of its single run.
A pair whose loss becomes non-finite (or that meets the early-stop criterion)
is frozen: its gradient is zeroed and its parameters are held, while the
others carry on. Loss history stays on the device and is read once at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from featreg.registration import kernels, pca
from featreg.registration.bspline import BSplineTransform
from featreg.registration.sampling import feature_points, warp_features, warp_grid_inside, warp_image
from featreg.registration.units import displacement_to_mm
from featreg.devices import resolve_device
from featreg.registration.losses import FEATURE_DISTANCES, IMAGE_DISTANCES, layered_distance
from featreg.registration.progress import PROGRESS_EVERY_S, ProgressLog
from featreg.registration.regularisers import diffusion, regulariser_weights
from featreg.registration.settings import EARLY_STOP_WINDOW, RegistrationSettings

logger = logging.getLogger(__name__)

LOSS_COLUMNS = ("total", "image", "feature", "regulariser")
"""Columns of :attr:`RegistrationResult.loss`: J and its unweighted terms (NaN for a term not computed)."""

Encoder = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class RegistrationResult:
    """Per pair (first axis B) results of :func:`register_pairs`, and run-wide cost.

    ``loss[b, :evaluations[b]]`` holds pair b's evaluated iterations;
    ``iterations[b]`` counts the optimiser steps applied to it; ``pca_kept[b]`` the
    fraction of pair b's joint feature variance its ``pca`` components keep (None without PCA).
    """

    displacement_mm: np.ndarray  # (B, 2, X, Y) float32, mm, component c along array axis c
    warped: np.ndarray  # (B, 1, X, Y) float32, the warped moving images
    loss: np.ndarray  # (B, T, 4) float32, columns LOSS_COLUMNS
    evaluations: np.ndarray  # (B,) int
    iterations: np.ndarray  # (B,) int
    status: list[str]  # "ok" | "failed"
    reason: list[str]  # "" when ok
    seconds: float
    peak_memory_mb: float
    device: str
    spacing: tuple[float, float]
    settings: RegistrationSettings
    pca_kept: np.ndarray | None = None  # (B,) float64

    @property
    def batch(self) -> int:
        return len(self.status)


def _as_batch(name: str, value: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"{name} must have shape (B, 1, X, Y), got {tuple(tensor.shape)}")
    if tensor.shape[0] < 1 or min(tensor.shape[2:]) < 2:
        raise ValueError(f"{name} must hold at least one image of at least 2x2 pixels, got {tuple(tensor.shape)}")
    return tensor.detach().to(torch.float32)


def transform_for(settings: RegistrationSettings, shape: Sequence[int], *, device: torch.device | str | None = None) -> BSplineTransform:
    """The B-spline transform ``settings`` describe on images of ``shape``."""
    return BSplineTransform(
        shape,
        lattice=settings.lattice,
        control_spacing_px=settings.control_spacing_px,
        placement=settings.lattice_placement,
        order=settings.order,
        diffeomorphic=settings.diffeomorphic,
        squaring_steps=settings.squaring_steps,
        squaring_convention=settings.squaring_convention,
        device=device,
    )


def pair_objective(
    transform: BSplineTransform,
    params: torch.Tensor,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    settings: RegistrationSettings,
    reg_weights: torch.Tensor,
    *,
    encoder: Encoder | None = None,
    fixed_features: torch.Tensor | None = None,
    moving_features: torch.Tensor | None = None,
    projection: tuple[torch.Tensor, torch.Tensor] | None = None,
    layers: tuple[Sequence[int], Sequence[float]] | None = None,
    workspace: kernels.Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pair ``(J, D_I, D_F, R)``, each ``(B,)``: J = (1-α)·D_I + α·D_F + λ·R.

    ``reg_weights`` are the regulariser's :func:`~featreg.registration.regularisers.regulariser_weights`
    (dtype and device of ``params``). The moving image is warped with
    ``grid_sample``; R is evaluated on the lattice when the field is linear in
    the parameters (non-diffeomorphic), on the dense field otherwise.
    D_I is skipped (NaN) when α = 1, D_F (and the encoder) when α = 0.
    D_F compares ``fixed_features`` with, per ``settings.encode``, the encoder's features of
    the warped image (``each_iteration``; projected by ``projection = (mean, basis)``, a
    :func:`~featreg.registration.pca.joint_basis`, when given) or ``moving_features`` warped
    by the field (``once``; :func:`~featreg.registration.sampling.warp_features`, over the
    cells whose sample point is inside the image; already projected, as projection commutes
    with the warp). In ``once`` mode the image is only warped for D_I; on CPU the warp and
    D_F are one fused node (:func:`featreg.registration.kernels.warped_feature_distance`,
    same maths), which reads feature maps stored channels-last without copying them.
    ``layers`` = (channel counts, weights) of an encoder's selected layers makes D_F their
    weighted mean (:func:`~featreg.registration.losses.layered_distance`), in both modes.
    NCC alone (α = 0) on CPU runs as fused kernels (same maths), with the loop's
    ``workspace`` when given: B-spline field, warp and NCC in one node
    (:func:`featreg.registration.kernels.lattice_warped_ncc`), or after scaling and
    squaring warp and NCC in one (:func:`featreg.registration.kernels.warped_ncc`).
    """
    fused = settings.alpha == 0 and settings.image_distance == "ncc" and kernels.fused_available(params, moving)
    on_lattice = fused and not transform.diffeomorphic
    if not on_lattice:
        grid, field = transform.sampling_grid(params)
    once = settings.encode == "once"
    if not fused and (settings.alpha < 1 or not once):
        warped, inside = warp_grid_inside(moving, grid)
    if transform.diffeomorphic:
        reg = diffusion(field, reg_weights.flip(0))  # field in grid order: component i is u_(1-i)
    else:
        reg = transform.difference_energy(params, reg_weights, closed_form=on_lattice)
    total = settings.lam * reg
    nan = torch.full_like(reg, float("nan"))
    image = feature = nan
    if settings.alpha < 1:
        if on_lattice:
            image = kernels.lattice_warped_ncc(fixed, moving, params, transform.bands, workspace)
        elif fused:
            image = kernels.warped_ncc(fixed, moving, grid.permute(0, 3, 1, 2), workspace)
        else:
            image = IMAGE_DISTANCES[settings.image_distance](fixed, warped, inside)
        total = total + (1 - settings.alpha) * image
    if settings.alpha > 0:
        distance = FEATURE_DISTANCES[settings.feature_distance]
        if once and layers is None and kernels.fused_available(params, moving_features):
            points, _ = feature_points(field, moving_features.shape[2:])
            feature = kernels.warped_feature_distance(
                fixed_features, moving_features, points, transform.shape, settings.feature_distance, workspace
            )
        elif once:  # the torch path; an encoder's layers share one grid, so the whole map is warped once
            warped_features, inside = warp_features(moving_features, field)
            feature = layered_distance(lambda f, w: distance(f, w, inside), fixed_features, warped_features,
                                       *(layers or (None, None)))
        else:
            warped_features = encoder(warped)
            if projection is not None:
                warped_features = pca.project(warped_features, *projection)
            if warped_features.shape != fixed_features.shape:
                raise ValueError(
                    f"encoder output {tuple(warped_features.shape)} does not match fixed_features {tuple(fixed_features.shape)}"
                )
            feature = layered_distance(distance, fixed_features, warped_features, *(layers or (None, None)))
        total = total + settings.alpha * feature
    return total, image, feature, reg


def _as_features(name: str, value: np.ndarray | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.ndim != 4 or tensor.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch}, C, g, g), got {tuple(tensor.shape)}")
    return tensor.detach().to(device, torch.float32)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def register_pairs(
    fixed: np.ndarray | torch.Tensor,
    moving: np.ndarray | torch.Tensor,
    settings: RegistrationSettings,
    *,
    spacing: Sequence[float] = (1.8, 1.8),
    encoder: Encoder | None = None,
    fixed_features: np.ndarray | torch.Tensor | None = None,
    moving_features: np.ndarray | torch.Tensor | None = None,
    layers: tuple[Sequence[int], Sequence[float]] | None = None,
    device: str | torch.device = "auto",
    progress_every_s: float | None = PROGRESS_EVERY_S,
) -> RegistrationResult:
    """Register B moving images onto B fixed images (``(B, 1, X, Y)``, [0, 1]) jointly.

    ``encoder`` maps an image batch ``(B, 1, X, Y)`` to features ``(B, C, g, g)``
    and must be differentiable; it is needed when ``settings.alpha > 0``, except in
    ``encode: once`` mode given both feature maps. ``fixed_features`` and
    ``moving_features`` are the fixed and moving images' features, encoded beforehand
    without gradients (when not given, the encoder computes them here, before the loop).
    ``once`` mode needs ``moving_features`` and never calls the encoder inside the loop;
    ``each_iteration`` mode reads them only for ``pca``'s basis. ``layers`` = (channel counts,
    weights) of an encoder with selected layers (``FeatureEncoder.layer_splits``,
    ``layer_weights``) averages the feature distance over them; it excludes ``pca``, which
    mixes the layers' channels. ``spacing`` (mm) converts the
    result to mm and feeds the ``physical`` regulariser. Peak memory is
    ``torch.cuda.max_memory_allocated`` on GPU, the process's peak RSS on CPU
    (since process start). ``settings.seed`` seeds torch (for encoders with
    randomness; the engine itself is deterministic, starting from the identity).
    ``progress_every_s`` spaces the batch's progress log lines (None: none); on GPU
    a line is only written on an iteration where the loop may read the device anyway.
    """
    if not isinstance(settings, RegistrationSettings):
        raise TypeError(f"settings must be a RegistrationSettings, got {type(settings).__name__}")
    fixed_t = _as_batch("fixed", fixed)
    moving_t = _as_batch("moving", moving)
    if fixed_t.shape != moving_t.shape:
        raise ValueError(f"fixed and moving shapes differ: {tuple(fixed_t.shape)} vs {tuple(moving_t.shape)}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 2 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be two positive numbers (mm), got {spacing}")
    once = settings.encode == "once"
    if settings.alpha > 0 and once and moving_features is None:
        raise ValueError(
            f"encode 'once' with alpha = {settings.alpha} needs moving_features (B, C, g, g), encoded beforehand without gradient"
        )
    if layers is not None and settings.pca is not None:
        raise ValueError("pca mixes the channels of an encoder's layers: give layers or pca, not both")
    if settings.alpha > 0 and encoder is None and not (once and fixed_features is not None):
        raise ValueError(f"alpha = {settings.alpha} needs an encoder" + (" or fixed_features" if once else ""))
    dev = resolve_device(device)
    B, _, X, Y = fixed_t.shape
    torch.manual_seed(settings.seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()

    fixed_t, moving_t = fixed_t.to(dev), moving_t.to(dev)
    feats = moving_feats = projection = kept = None
    if settings.alpha > 0:
        with torch.no_grad():
            feats = _as_features("fixed_features", encoder(fixed_t) if fixed_features is None else fixed_features, B, dev)
            if once or settings.pca is not None:
                moving_feats = _as_features("moving_features", encoder(moving_t) if moving_features is None else moving_features, B, dev)
                if moving_feats.shape != feats.shape:
                    raise ValueError(f"moving_features {tuple(moving_feats.shape)} do not match fixed_features {tuple(feats.shape)}")
            if settings.pca is not None:
                mean, basis, kept = pca.joint_basis(feats, moving_feats, settings.pca)
                feats = pca.project(feats, mean, basis)
                if once:
                    moving_feats = pca.project(moving_feats, mean, basis)
                else:
                    projection = (mean, basis)
            if once and layers is None and kernels.fused_available(feats, moving_feats):  # the fused node's layout, made once
                feats, moving_feats = (f.contiguous(memory_format=torch.channels_last) for f in (feats, moving_feats))

    transform = transform_for(settings, (X, Y), device=dev)
    params = transform.zeros(B).requires_grad_(True)
    reg_weights = regulariser_weights(settings.regulariser, (X, Y), spacing).to(dtype=params.dtype, device=dev)
    optimizer = torch.optim.Adam([params], lr=settings.lr, fused=True)
    T = settings.iterations
    history = torch.full((T, B, 4), float("nan"), device=dev)
    stepped = torch.zeros((T, B), dtype=torch.bool, device=dev)  # pair b took the step of iteration t
    active = torch.ones(B, dtype=torch.bool, device=dev)
    on_cpu = dev.type == "cpu"
    check_every = 1 if on_cpu else 50
    logger.info("registering %d pair(s) of %dx%d on %s, lattice %s, %d iterations", B, X, Y, dev, transform.lattice, T)

    progress = ProgressLog(T, progress_every_s, logger)
    workspace = kernels.Workspace()
    ran = 0
    for it in range(T):
        total, image, feature, reg = pair_objective(
            transform, params, fixed_t, moving_t, settings, reg_weights,
            encoder=encoder, fixed_features=feats, moving_features=moving_feats, projection=projection, layers=layers,
            workspace=workspace,
        )
        history[it] = torch.stack((total, image, feature, reg), dim=1).detach()
        active = active & torch.isfinite(total)
        if settings.early_stop_rtol is not None and it >= EARLY_STOP_WINDOW:
            before = history[it - EARLY_STOP_WINDOW, :, 0]
            active = active & ((total.detach() - before).abs() > settings.early_stop_rtol * before.abs())
        stepped[it] = active
        ran = it + 1
        # On CPU reading a flag is free, so the common all-active case skips the masking;
        # on GPU the masking always runs, so the loop never waits on the host.
        masking = not on_cpu or not bool(active.all())
        optimizer.zero_grad(set_to_none=True)
        (torch.where(active, total, 0.0) if masking else total).sum().backward()
        with torch.no_grad():
            if masking:
                keep = active.view(B, 1, 1, 1)
                params.grad = torch.where(keep, params.grad, 0.0)
                held = params.detach().clone()
                optimizer.step()
                params.copy_(torch.where(keep, params, held))
            else:
                optimizer.step()
        # A host read stops the loop once every pair stopped: each iteration on CPU (free),
        # every 50 on GPU and only when early stopping is on.
        if (on_cpu or settings.early_stop_rtol is not None) and ran % check_every == 0:
            if not bool(active.any()):
                logger.info("all pairs stopped at iteration %d", ran)
                break
        if ran % check_every == 0 and progress.due():
            progress.write(ran, total.detach(), active)

    with torch.no_grad():
        displacement = transform.displacement(params.detach())
        warped = warp_image(moving_t, displacement)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start

    history_np = history.permute(1, 0, 2).cpu().numpy()
    steps = stepped.sum(dim=0).cpu().numpy().astype(int)
    # A pair that stopped before the loop ended was also evaluated at the iteration that stopped it.
    evaluations = np.minimum(steps + (steps < ran), ran)
    status, reason = [], []
    for b in range(B):
        history_np[b, evaluations[b]:] = np.nan  # a stopped pair's later rows are not its trajectory
        last = history_np[b, evaluations[b] - 1, 0]
        if np.isfinite(last):
            status.append("ok")
            reason.append("")
        else:
            kind = "NaN" if np.isnan(last) else "infinite"
            status.append("failed")
            reason.append(f"loss became {kind} at iteration {evaluations[b]}")
            logger.warning("pair %d: loss became %s at iteration %d; pair stopped", b, kind, evaluations[b])
    result = RegistrationResult(
        displacement_mm=displacement_to_mm(displacement, spacing),
        warped=warped.cpu().numpy().astype(np.float32),
        loss=history_np.astype(np.float32),
        evaluations=evaluations,
        iterations=steps,
        status=status,
        reason=reason,
        seconds=seconds,
        peak_memory_mb=_peak_memory_mb(dev),
        device=str(dev),
        spacing=spacing,
        settings=settings,
        pca_kept=None if kept is None else kept.cpu().numpy(),
    )
    logger.info("registered %d pair(s) in %.2f s (%d failed)", B, seconds, status.count("failed"))
    return result

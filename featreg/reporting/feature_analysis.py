"""Feature analyses of the paper: principal components (Fig. 2), distance against rigid motion (Fig. 3),
and encode-then-warp against warp-then-encode (Fig. 6), computed; :mod:`featreg.reporting.feature_figures` draws them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from featreg.encoders.features import FeatureEncoder
from featreg.registration.sampling import warp_image
from featreg.registration.units import displacement_from_mm
from featreg.registration.losses import cosine_dissimilarity, l1_distance

log = logging.getLogger(__name__)

# The paper's Fig. 3 protocol.
ROTATION_STEP = math.pi / 32
ROTATION_MAX = math.pi / 2
TRANSLATION_STEP_MM = 1.2
TRANSLATION_MAX_MM = 57.6


# --- principal components ---------------------------------------------------------------------

def pca_basis(features: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (C,), components (k, C)) of a ``(C, g, g)`` map's pixels as samples."""
    x = _pixels(features)
    mean = x.mean(0)
    _, _, v = torch.linalg.svd(x - mean, full_matrices=False)
    return mean, v[:k]


def pca_project(features: torch.Tensor, basis: tuple[torch.Tensor, torch.Tensor]) -> np.ndarray:
    """Project a ``(C, g, g)`` map on a basis: ``(k, g, g)`` scores."""
    mean, comps = basis
    g = features.shape[-2:]
    return ((_pixels(features) - mean) @ comps.T).T.reshape(-1, *g).numpy()


def to_unit(x: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
    """Min–max each leading-axis slice to [0, 1] (with the given bounds, if any)."""
    axes = tuple(range(1, x.ndim))
    lo = x.min(axis=axes, keepdims=True) if lo is None else lo
    hi = x.max(axis=axes, keepdims=True) if hi is None else hi
    return np.clip((x - lo) / np.maximum(hi - lo, 1e-12), 0, 1)


def _pixels(features: torch.Tensor) -> torch.Tensor:
    f = features.detach().float().cpu()
    f = f[0] if f.ndim == 4 else f
    if f.ndim != 3:
        raise ValueError(f"expected features of shape (C, g, g) or (1, C, g, g), got {tuple(features.shape)}")
    return f.reshape(f.shape[0], -1).T


# --- warping (array axes as in docs/design.md: (B, C, X, Y), displacements (B, 2, X, Y) in mm) ---
# Images are warped by the registration engine itself, so the figures measure what registration optimises.

def warp_image_mm(image: torch.Tensor, displacement_mm: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """M(x + u(x)) by :func:`featreg.registration.sampling.warp_image`, ``u`` in mm on the image's pixels."""
    return warp_image(image, torch.from_numpy(displacement_from_mm(displacement_mm.cpu().numpy(), spacing)))


def warp_features(features: torch.Tensor, displacement_mm: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
    """Warp a ``(B, C, g, g)`` map that covers the image's field of view by an image-grid displacement.

    Feature cell j sits at image pixel (j + ½)·X/g − ½ (bilinear resizing,
    ``align_corners=False``), so both maps share the normalised coordinate
    (2p + 1)/X − 1 of image pixel p; the field is resampled to the cells.
    """
    X, Y = displacement_mm.shape[-2:]
    g = features.shape[-2:]
    u = F.interpolate(displacement_mm, size=g, mode="bilinear", align_corners=False)
    scale = torch.tensor([2 / (X * spacing[0]), 2 / (Y * spacing[1])], dtype=u.dtype).view(1, 2, 1, 1)
    axes = [(2 * torch.arange(n, dtype=u.dtype) + 1) / n - 1 for n in g]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    pos = base + u * scale
    return F.grid_sample(features, pos.flip(1).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=False)


def rotation_field(shape: tuple[int, int], spacing: Sequence[float], angle: float) -> torch.Tensor:
    """``(1, 2, X, Y)`` mm field of a rotation by ``angle`` (rad) about the image centre: x + u = R x."""
    coords = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x = torch.stack(torch.meshgrid(*coords, indexing="ij"))
    c, s = math.cos(angle), math.sin(angle)
    rx = torch.stack([c * x[0] - s * x[1], s * x[0] + c * x[1]])
    return (rx - x)[None]


def translation_field(shape: tuple[int, int], shift_mm: float, axis: int = 0) -> torch.Tensor:
    """``(1, 2, X, Y)`` constant field of ``shift_mm`` along array ``axis``."""
    u = torch.zeros(1, 2, *shape)
    u[:, axis] = shift_mm
    return u


# --- distances: the engine's (losses.py), after the paper's normalisation of each map to [0, 1] ----

def normalise01(features: torch.Tensor) -> torch.Tensor:
    """Min–max each map of a ``(B, C, g, g)`` batch to [0, 1] over all its channels and pixels."""
    lo = features.amin(dim=(1, 2, 3), keepdim=True)
    hi = features.amax(dim=(1, 2, 3), keepdim=True)
    return (features - lo) / (hi - lo).clamp_min(1e-12)


@torch.no_grad()
def _curve(encoder: FeatureEncoder, image: torch.Tensor, fields: list[torch.Tensor], spacing, batch_size: int, desc: str):
    ref = normalise01(encoder(image))
    cos, l1 = [], []
    for i in tqdm(range(0, len(fields), batch_size), desc=desc, unit="batch"):
        u = torch.cat(fields[i : i + batch_size])
        moved = warp_image_mm(image.expand(u.shape[0], -1, -1, -1), u, spacing)
        f = normalise01(encoder(moved))
        cos.append(cosine_dissimilarity(f, ref.expand_as(f)).cpu())
        l1.append(l1_distance(f, ref.expand_as(f)).cpu())
    return torch.cat(cos).numpy(), torch.cat(l1).numpy()


def distance_curves(
    encoder: FeatureEncoder,
    image: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    *,
    axis: int = 0,
    rotation_step: float = ROTATION_STEP,
    translation_step_mm: float = TRANSLATION_STEP_MM,
    translation_max_mm: float = TRANSLATION_MAX_MM,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Fig. 3: cosine and L1 feature distances between an ``(X, Y)`` image and its rotated / translated copies.

    Rotations span ±90° in ``rotation_step`` (π/32); translations ±57.6 mm along
    ``axis`` in 1.2 mm steps. Columns: motion (rotation|translation), amount
    (degrees or mm), cosine, l1.
    """
    img = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {tuple(img.shape)}")
    shape = tuple(img.shape)
    img = img[None, None]
    n_rot = round(ROTATION_MAX / rotation_step)
    angles = [k * rotation_step for k in range(-n_rot, n_rot + 1)]
    n_tr = round(translation_max_mm / translation_step_mm)
    shifts = [k * translation_step_mm for k in range(-n_tr, n_tr + 1)]
    rc, rl = _curve(encoder, img, [rotation_field(shape, spacing, a) for a in angles], spacing, batch_size, "rotation")
    tc, tl = _curve(encoder, img, [translation_field(shape, s, axis) for s in shifts], spacing, batch_size, "translation")
    return pd.DataFrame(
        {
            "motion": ["rotation"] * len(angles) + ["translation"] * len(shifts),
            "amount": [math.degrees(a) for a in angles] + shifts,
            "cosine": np.concatenate([rc, tc]),
            "l1": np.concatenate([rl, tl]),
        }
    )


# --- encode-then-warp vs warp-then-encode ---------------------------------------------------------

@torch.no_grad()
def commutativity(
    encoder: FeatureEncoder, image: np.ndarray | torch.Tensor, displacement_mm: np.ndarray | torch.Tensor, spacing: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Fig. 6: features of the image, those features warped, features of the warped image, and their
    per-cell cosine dissimilarity (1 − cos). Image ``(X, Y)``, field ``(2, X, Y)`` in mm."""
    img = torch.as_tensor(np.asarray(image), dtype=torch.float32)[None, None]
    u = torch.as_tensor(np.asarray(displacement_mm), dtype=torch.float32)[None]
    if u.shape[1:] != (2, *img.shape[-2:]):
        raise ValueError(f"expected a displacement of shape (2, {img.shape[-2]}, {img.shape[-1]}), got {tuple(u.shape[1:])}")
    encoded = encoder(img).cpu()
    warped_features = warp_features(encoded, u, spacing)
    warped_image = warp_image_mm(img, u, spacing)
    encoded_warped = encoder(warped_image).cpu()
    difference = 1 - F.cosine_similarity(warped_features, encoded_warped, dim=1)
    return {
        "image": img[0, 0],
        "warped_image": warped_image[0, 0],
        "encoded": encoded[0],
        "warped_features": warped_features[0],
        "encoded_warped": encoded_warped[0],
        "difference": difference[0],
    }





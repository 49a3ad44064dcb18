"""NIfTI reading with ACDC's header quirks, and writing through :mod:`featreg.io`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from featreg.errors import InputError
from featreg.io import atomic_path


def read_nifti(path: str | Path, *, patient: str | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read a NIfTI file as (array, spacing in mm from pixdim).

    The spacing comes from ``header.get_zooms()``: ACDC's affine says 1 mm and
    lies. A NaN ``scl_slope`` (as in ACDC) is treated as no scaling.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file is missing", path=path, patient=patient)
    try:
        img = nib.load(str(path))
        raw = np.asarray(img.dataobj.get_unscaled())
        slope, inter = img.header.get_slope_inter()
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"unreadable or truncated NIfTI ({exc.__class__.__name__}: {exc})", path=path, patient=patient) from exc
    data = raw
    if slope is not None and np.isfinite(slope) and (slope != 1 or (inter or 0) != 0):
        data = raw * slope + (inter or 0)
    spacing = tuple(float(z) for z in img.header.get_zooms()[: raw.ndim])
    return data, spacing


def write_nifti(
    path: str | Path,
    data: np.ndarray,
    spacing: Sequence[float],
    *,
    intent: str | None = None,
) -> Path:
    """Write ``data`` with ``spacing`` (mm) in pixdim and a matching diagonal affine, atomically."""
    path = Path(path)
    affine = np.eye(4)
    for axis, step in enumerate(list(spacing)[:3]):
        affine[axis, axis] = float(step)
    img = nib.Nifti1Image(np.asarray(data), affine)
    zooms = list(spacing) + [1.0] * (data.ndim - len(spacing))
    img.header.set_zooms(zooms[: data.ndim])
    if intent is not None:
        img.header.set_intent(intent)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


SPACING_DECIMALS = 6
"""pixdim is float32 on disk: spacings are rounded to this many decimals so 1.8 reads back as 1.8."""


def write_displacement(path: str | Path, field_mm: np.ndarray, spacing: Sequence[float]) -> Path:
    """Write a ``(2, X, Y)`` field in mm as NIfTI ``(X, Y, 1, 1, 2)`` with intent vector, atomically."""
    layout = np.moveaxis(np.asarray(field_mm, dtype=np.float32), 0, -1)[:, :, None, None, :]
    return write_nifti(path, layout, spacing, intent="vector")


def read_displacement(
    path: str | Path, *, patient: str | None = None, shape: Sequence[int] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Read ``displacement.nii.gz`` back as ``((2, X, Y) float32 in mm, spacing (sx, sy) in mm)``.

    ``shape``, when given, is the ``(X, Y)`` the field must cover (e.g. the fixed
    label's). A field with non-finite values is refused: no metric or figure means
    anything on it.
    """
    data, spacing = read_nifti(path, patient=patient)
    expected = (*shape, 1, 1, 2) if shape is not None else None
    if data.ndim != 5 or data.shape[2:] != (1, 1, 2) or (expected is not None and data.shape != expected):
        raise InputError(f"expected a displacement of shape {expected or '(X, Y, 1, 1, 2)'}, got {data.shape}",
                         path=path, patient=patient)
    if not np.isfinite(data).all():
        raise InputError("displacement has non-finite values", path=path, patient=patient)
    field = np.moveaxis(data[:, :, 0, 0, :], -1, 0).astype(np.float32)
    return field, (round(float(spacing[0]), SPACING_DECIMALS), round(float(spacing[1]), SPACING_DECIMALS))

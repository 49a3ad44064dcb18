"""NIfTI reading with ACDC's header quirks, and atomic writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from featreg.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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

"""A preprocessed fixed/moving pair on disk: four 2D NIfTI files and ``pair.json``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featreg.data.nifti import read_nifti, write_nifti
from featreg.io import atomic_path
from featreg.errors import InputError

PAIR_FILES = ("fixed_image", "fixed_label", "moving_image", "moving_label")
"""NIfTI files of a pair folder (``<name>.nii.gz``); ``pair.json`` holds the provenance."""


@dataclass
class Pair:
    """Fixed (ED) and moving (ES) 2D slices, shape (X, Y): images float32 in [0, 1], labels uint8 0-3."""

    patient: str
    fixed: np.ndarray
    moving: np.ndarray
    fixed_label: np.ndarray
    moving_label: np.ndarray
    spacing: tuple[float, float]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.fixed, self.moving, self.fixed_label, self.moving_label)}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"pair arrays must share one 2D shape, got {sorted(shapes)}")


def write_pair(pair: Pair, directory: str | Path) -> Path:
    """Write ``pair`` to ``directory``: built in a temporary sibling folder, then renamed into place.

    A failure leaves ``directory`` as it was; an existing pair there is replaced.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".part", dir=directory.parent))
    try:
        arrays = {
            "fixed_image": pair.fixed.astype(np.float32),
            "fixed_label": pair.fixed_label.astype(np.uint8),
            "moving_image": pair.moving.astype(np.float32),
            "moving_label": pair.moving_label.astype(np.uint8),
        }
        for name, array in arrays.items():
            write_nifti(tmp / f"{name}.nii.gz", array, pair.spacing)
        record = {"patient": pair.patient, "spacing": list(pair.spacing), **pair.provenance}
        with atomic_path(tmp / "pair.json") as path:
            path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
            os.replace(directory, old / directory.name)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_pair(directory: str | Path) -> Pair:
    """Read a pair folder written by :func:`write_pair`."""
    directory = Path(directory)
    meta_path = directory / "pair.json"
    if not meta_path.is_file():
        raise InputError("pair.json is missing (not a preprocessed pair folder)", path=meta_path)
    try:
        provenance = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"pair.json is not valid JSON ({exc})", path=meta_path) from exc
    patient = provenance.get("patient", directory.name)
    arrays = {}
    spacing: tuple[float, ...] = ()
    for name in PAIR_FILES:
        data, spacing = read_nifti(directory / f"{name}.nii.gz", patient=patient)
        if data.ndim != 2:
            raise InputError(f"expected a 2D slice, got shape {data.shape}", path=directory / f"{name}.nii.gz", patient=patient)
        arrays[name] = data
    # pixdim is float32; pair.json keeps the exact spacing that was asked for.
    exact = provenance.get("spacing", spacing[:2])
    if not np.allclose(exact, spacing[:2], rtol=1e-5):
        raise InputError(f"pair.json spacing {exact} disagrees with pixdim {spacing[:2]}", path=meta_path, patient=patient)
    return Pair(
        patient=patient,
        fixed=arrays["fixed_image"].astype(np.float32),
        moving=arrays["moving_image"].astype(np.float32),
        fixed_label=arrays["fixed_label"].astype(np.uint8),
        moving_label=arrays["moving_label"].astype(np.uint8),
        spacing=(float(exact[0]), float(exact[1])),
        provenance=provenance,
    )

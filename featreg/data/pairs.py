"""A preprocessed fixed/moving pair on disk: four 2D NIfTI files and ``pair.json``.

A patient's folder ``<pairs>/<patient>/`` is its one pair (``preprocess.slices: middle``)
or holds one pair folder per slice, ``<pairs>/<patient>/slice<NN>/`` (NN the slice index in
the volume). The workflow knows patients; the jobs expand a patient's folder into its
pairs with :func:`expand_pairs`, and name each by :func:`pair_name`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featreg.data import LABELS
from featreg.data.nifti import read_nifti, write_nifti
from featreg.io import atomic_path, read_json, write_json_atomic
from featreg.errors import ConfigError, InputError

PAIR_FILES = ("fixed_image", "fixed_label", "moving_image", "moving_label")
"""NIfTI files of a pair folder (``<name>.nii.gz``); ``pair.json`` holds the provenance."""

SLICE_PREFIX = "slice"
"""Slice pair folders inside a patient's folder are ``slice<NN>`` (NN the slice index)."""

PAIR_FAILURE = "failed.json"
"""The only file of a pair folder whose preprocessing failed: the patient and the reason."""


def slice_dir(patient_dir: str | Path, index: int) -> Path:
    """The pair folder of slice ``index`` inside a patient's folder."""
    return Path(patient_dir) / f"{SLICE_PREFIX}{index:02d}"


def is_slice_dir(pair_dir: str | Path) -> bool:
    """Whether ``pair_dir`` is one slice of a patient (``slice<NN>``), not a patient's own pair folder."""
    name = Path(pair_dir).name
    return name.startswith(SLICE_PREFIX) and name[len(SLICE_PREFIX) :].isdigit()


def patient_pair_dirs(patient_dir: str | Path) -> list[Path]:
    """The pair folders of one patient: its slice folders in slice order, else the patient's folder itself."""
    patient_dir = Path(patient_dir)
    slices = [d for d in patient_dir.glob(f"{SLICE_PREFIX}*") if d.is_dir() and is_slice_dir(d)]
    return sorted(slices, key=lambda d: int(d.name[len(SLICE_PREFIX) :])) or [patient_dir]


def middle_pair(patient_dir: str | Path) -> Path:
    """The pair a figure shows of one patient: its own, or its middle slice's when it has one per slice."""
    pairs = patient_pair_dirs(patient_dir)
    return pairs[len(pairs) // 2]


def pair_patient(pair_dir: str | Path) -> str:
    """The patient of a pair folder."""
    pair_dir = Path(pair_dir)
    return pair_dir.parent.name if is_slice_dir(pair_dir) else pair_dir.name


def pair_name(pair_dir: str | Path) -> str:
    """A pair's name in results and manifests: ``<patient>`` or ``<patient>/slice<NN>``."""
    pair_dir = Path(pair_dir)
    return f"{pair_dir.parent.name}/{pair_dir.name}" if is_slice_dir(pair_dir) else pair_dir.name


def expand_pairs(patient_dirs: Sequence[str | Path]) -> list[Path]:
    """Every pair folder of the given patients' folders (:func:`patient_pair_dirs`), in order."""
    return [pair for patient_dir in patient_dirs for pair in patient_pair_dirs(patient_dir)]


def expand_pair_outputs(patient_dirs: Sequence[str | Path], out_paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(pair folder, output file) for every pair: a patient's ``<out>.<ext>`` becomes ``<out>/slice<NN>.<ext>`` per slice."""
    if len(patient_dirs) != len(out_paths):
        raise ConfigError(f"got {len(patient_dirs)} pair folders but {len(out_paths)} output files")
    expanded = []
    for patient_dir, out in zip(patient_dirs, map(Path, out_paths)):
        for pair in patient_pair_dirs(patient_dir):
            expanded.append((pair, out.with_suffix("") / f"{pair.name}{out.suffix}" if is_slice_dir(pair) else out))
    return expanded


def pair_labels(pair_dir: str | Path) -> dict[int, str]:
    """The label classes of a pair (value -> name, by value): its preprocessing ``labels``, else ACDC's."""
    try:
        named = json.loads((Path(pair_dir) / "pair.json").read_text())["options"]["labels"]
    except (OSError, KeyError, TypeError, ValueError):
        return dict(LABELS)
    return {int(value): name for name, value in sorted(named.items(), key=lambda item: item[1])}


def pair_slice(pair_dir: str | Path) -> int | None:
    """The slice index of a pair (``slice_index`` of its ``pair.json``; its folder name when that is unreadable)."""
    pair_dir = Path(pair_dir)
    try:
        return int(json.loads((pair_dir / "pair.json").read_text())["slice_index"])
    except (OSError, KeyError, TypeError, ValueError):
        return int(pair_dir.name[len(SLICE_PREFIX) :]) if is_slice_dir(pair_dir) else None


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
    patient = provenance.get("patient", pair_patient(directory))
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


def write_pair_failure(pair_dir: str | Path, patient: str, reason: str) -> Path:
    """Leave only :data:`PAIR_FAILURE` in ``pair_dir``: the pair (patient or slice) failed preprocessing."""
    shutil.rmtree(pair_dir, ignore_errors=True)
    return write_json_atomic(Path(pair_dir) / PAIR_FAILURE, {"patient": patient, "reason": reason})


def pair_failure(pair_dir: str | Path) -> str | None:
    """Why a pair's preprocessing failed, as its :data:`PAIR_FAILURE` records (None when it holds none)."""
    path = Path(pair_dir) / PAIR_FAILURE
    return str(read_json(path, "pair failure record")["reason"]) if path.is_file() else None


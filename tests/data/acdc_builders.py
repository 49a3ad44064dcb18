"""Builders of small hand-made ACDC folders for the data tests (imported by them, not collected)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featreg.data.synthetic import write_acdc_nifti


def write_acdc_patient(
    root: Path,
    patient: str,
    *,
    ed_image: np.ndarray,
    ed_label: np.ndarray,
    es_image: np.ndarray | None = None,
    es_label: np.ndarray | None = None,
    spacing: tuple[float, float, float] = (1.5, 1.5, 10.0),
    subset: str = "testing",
    database: bool = True,
    ed: int = 1,
    es: int = 12,
    group: str = "NOR",
) -> Path:
    """Write one patient with ACDC's header quirks; returns its folder."""
    folder = root / ("database" if database else "") / subset / patient
    folder.mkdir(parents=True, exist_ok=True)
    es_image = ed_image if es_image is None else es_image
    es_label = ed_label if es_label is None else es_label
    for frame, image, label in ((ed, ed_image, ed_label), (es, es_image, es_label)):
        write_acdc_nifti(folder / f"{patient}_frame{frame:02d}.nii.gz", image, spacing)
        write_acdc_nifti(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", label, spacing)
    (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: {group}\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n")
    return folder


def box_volume(shape=(60, 50, 5), slices=(1, 2, 3), box=((20, 35), (15, 30))) -> tuple[np.ndarray, np.ndarray]:
    """Image with a bright box (LV) inside a ring (Myo) and a side region (RV) on ``slices``; returns (image, label)."""
    label = np.zeros(shape, np.uint8)
    (x0, x1), (y0, y1) = box
    for z in slices:
        label[x0 - 2 : x1 + 2, y0 - 2 : y1 + 2, z] = 2
        label[x0:x1, y0:y1, z] = 3
        label[x0 - 6 : x0 - 2, y0:y1, z] = 1
    rng = np.random.default_rng(0)
    image = (40 + 150 * (label == 3) + 120 * (label == 1) + 10 * rng.random(shape)).astype(np.float32)
    return image, label


def make_root(root: Path) -> Path:
    """A two-patient ACDC root (patient121, patient122) in the database/ layout."""
    image, label = box_volume()
    for name in ("patient121", "patient122"):
        write_acdc_patient(root, name, ed_image=image, ed_label=label)
    return root

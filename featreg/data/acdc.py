"""Reader for the ACDC folder layout: ``Info.cfg`` and the ED/ES frames with their labels."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featreg.data.nifti import read_nifti
from featreg.errors import InputError

SUBSETS = ("training", "testing")
"""ACDC's two subset folders: patients 1-100 and 101-150."""

SPLITS: dict[str, range | None] = {
    "train": range(1, 101),
    "val": range(101, 121),
    "test": range(121, 151),  # the paper's 30 test pairs
    "all": None,
}

_PATIENT_RE = re.compile(r"^patient(\d{3,})$")


def patient_id(number: int) -> str:
    """ACDC folder name of patient ``number`` (``patient001``; ``patient1000`` above 999)."""
    if number < 1:
        raise ValueError(f"patient number must be >= 1, got {number}")
    return f"patient{number:03d}"


def patient_number(patient: str) -> int:
    """Inverse of :func:`patient_id`."""
    match = _PATIENT_RE.match(patient)
    if match is None:
        raise ValueError(f"not an ACDC patient id: {patient!r} (expected e.g. 'patient001')")
    return int(match.group(1))


def patient_order(patient: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key of any patient id: digit runs compare as numbers (``case2`` before ``case10``).

    ACDC ids sort by number, as with :func:`patient_number`; manifest ids need not be ACDC's.
    """
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", patient))


def subset_of(patient: str) -> str:
    """ACDC's folder for a patient: ``training`` holds 1-100, ``testing`` the rest."""
    return "training" if patient_number(patient) <= 100 else "testing"


def database_dir(root: str | Path) -> Path:
    """The folder holding ``training/`` and ``testing/``: ``root/database`` or ``root`` itself."""
    root = Path(root)
    for candidate in (root / "database", root):
        if any((candidate / subset).is_dir() for subset in SUBSETS):
            return candidate
    raise InputError(
        "no ACDC layout found: expected database/training, database/testing, training or testing inside", path=root
    )


def list_patients(root: str | Path) -> list[str]:
    """Patient ids present under ``root``, sorted by number."""
    base = database_dir(root)
    found = {
        child.name
        for subset in SUBSETS
        if (base / subset).is_dir()
        for child in (base / subset).iterdir()
        if child.is_dir() and _PATIENT_RE.match(child.name)
    }
    return sorted(found, key=patient_number)


def patient_dir(root: str | Path, patient: str) -> Path:
    """Folder of ``patient`` (in ``training/`` or ``testing/``, whichever holds it)."""
    base = database_dir(root)
    for subset in SUBSETS:
        candidate = base / subset / patient
        if candidate.is_dir():
            return candidate
    raise InputError("patient folder not found in training/ or testing/", path=base, patient=patient)


def select_patients(available: Sequence[str], split: str | Iterable[int | str]) -> list[str]:
    """Patients of ``split`` ("test", "val", "train", "all", or explicit numbers / ids) among ``available``.

    A named split keeps the available patients whose number lies in its range
    (so a small cohort yields a subset); an explicit request for a patient that
    is absent is an error naming it.
    """
    available_set = set(available)
    if isinstance(split, str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)} or a list of patients")
        wanted = SPLITS[split]
        chosen = [p for p in available if wanted is None or patient_number(p) in wanted]
        return sorted(chosen, key=patient_number)
    requested = [patient_id(p) if isinstance(p, int) else str(p) for p in split]
    missing = [p for p in requested if p not in available_set]
    if missing:
        raise InputError(f"requested patient(s) not found: {', '.join(missing)}")
    return list(dict.fromkeys(requested))


def parse_info_cfg(path: str | Path, *, patient: str | None = None) -> dict[str, int | float | str]:
    """Parse ``Info.cfg`` (``Key: value`` lines); ED, ES and NbFrame become ints, Height and Weight floats.

    ED, ES and Group are required.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("Info.cfg is missing", path=path, patient=patient)
    info: dict[str, int | float | str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError(f"line {number} is not 'Key: value': {line!r}", path=path, patient=patient)
        key, value = key.strip(), value.strip()
        try:
            if key in ("ED", "ES", "NbFrame"):
                info[key] = int(float(value))
            elif key in ("Height", "Weight"):
                info[key] = float(value)
            else:
                info[key] = value
        except ValueError:
            raise InputError(f"{key} is not a number: {value!r}", path=path, patient=patient) from None
    missing = [key for key in ("ED", "ES", "Group") if key not in info]
    if missing:
        raise InputError(f"Info.cfg lacks {', '.join(missing)}", path=path, patient=patient)
    return info


@dataclass
class AcdcPatient:
    """ED (fixed) and ES (moving) volumes of one patient; arrays have axes (x, y, slice), spacing in mm.

    Read from an ACDC folder (:func:`read_patient`) or a manifest row
    (:mod:`featreg.data.manifest`, where the frames are not known: None).
    """

    patient: str
    group: str
    ed_frame: int | None
    es_frame: int | None
    ed_image: np.ndarray
    ed_label: np.ndarray
    es_image: np.ndarray
    es_label: np.ndarray
    spacing: tuple[float, float, float]
    info: dict[str, int | float | str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def frame_files(folder: Path, patient: str, frame: int) -> tuple[Path, Path]:
    """Image and label paths of one frame (two-digit, 1-based)."""
    stem = f"{patient}_frame{frame:02d}"
    return folder / f"{stem}.nii.gz", folder / f"{stem}_gt.nii.gz"


def _read_volume(path: Path, patient: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3D volume (x, y, slice); a 2D slice becomes a volume of one slice (spacing 1 mm across)."""
    data, spacing = read_nifti(path, patient=patient)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data, spacing = data[..., None], (*spacing[:2], 1.0)
    if data.ndim != 3:
        raise InputError(f"expected a 2D slice or a 3D volume, got shape {data.shape}", path=path, patient=patient)
    return data, spacing[:3]


def _check_label(label: np.ndarray, path: Path, patient: str, labels: Iterable[int]) -> np.ndarray:
    if not np.issubdtype(label.dtype, np.number) or not np.all(np.isfinite(label)):
        raise InputError("label map holds non-finite values", path=path, patient=patient)
    allowed = [0, *labels]
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        raise InputError(f"label values outside {{{', '.join(map(str, allowed))}}}: {bad}", path=path, patient=patient)
    return label.astype(np.uint8)


def read_patient(root: str | Path, patient: str, labels: Iterable[int] = (1, 2, 3)) -> AcdcPatient:
    """Read ``patient``'s Info.cfg and its ED/ES images and labels, checking them (:func:`read_volumes`)."""
    folder = patient_dir(root, patient)
    info = parse_info_cfg(folder / "Info.cfg", patient=patient)
    ed, es = int(info["ED"]), int(info["ES"])
    ed_image_path, ed_label_path = frame_files(folder, patient, ed)
    es_image_path, es_label_path = frame_files(folder, patient, es)
    files = {"info": folder / "Info.cfg", "ed_image": ed_image_path, "ed_label": ed_label_path,
             "es_image": es_image_path, "es_label": es_label_path}
    return read_volumes(patient, files, group=str(info["Group"]), frames=(ed, es), info=info, labels=labels)


def read_volumes(
    patient: str,
    files: dict[str, Path],
    *,
    group: str,
    frames: tuple[int | None, int | None] = (None, None),
    info: dict[str, int | float | str] | None = None,
    labels: Iterable[int] = (1, 2, 3),
) -> AcdcPatient:
    """Read and check the ED/ES images and labels named in ``files`` (keys ``ed_image``, ``ed_label``, ...).

    2D slices or 3D volumes; image and label shapes must agree, ED and ES too; images
    must be finite and labels hold only 0 and ``labels``. Spacing comes from the ED
    image's pixdim. Every problem raises InputError naming the patient and the file.
    """
    ed_image_path, ed_label_path = files["ed_image"], files["ed_label"]
    es_image_path, es_label_path = files["es_image"], files["es_label"]
    labels = tuple(labels)
    volumes = {}
    for name, path in (
        ("ed_image", ed_image_path),
        ("ed_label", ed_label_path),
        ("es_image", es_image_path),
        ("es_label", es_label_path),
    ):
        volumes[name] = _read_volume(path, patient)
    spacing = volumes["ed_image"][1]
    for phase, image_path, label_path in (("ed", ed_image_path, ed_label_path), ("es", es_image_path, es_label_path)):
        image, label = volumes[f"{phase}_image"][0], volumes[f"{phase}_label"][0]
        if image.shape != label.shape:
            raise InputError(
                f"image shape {image.shape} differs from label shape {label.shape} ({label_path.name})",
                path=image_path,
                patient=patient,
            )
        if not np.all(np.isfinite(image)):
            raise InputError("image holds NaN or infinite intensities", path=image_path, patient=patient)
    if volumes["ed_image"][0].shape != volumes["es_image"][0].shape:
        raise InputError(
            f"ES shape {volumes['es_image'][0].shape} differs from ED shape {volumes['ed_image'][0].shape}",
            path=es_image_path,
            patient=patient,
        )
    return AcdcPatient(
        patient=patient,
        group=group,
        ed_frame=frames[0],
        es_frame=frames[1],
        ed_image=volumes["ed_image"][0],
        ed_label=_check_label(volumes["ed_label"][0], ed_label_path, patient, labels),
        es_image=volumes["es_image"][0],
        es_label=_check_label(volumes["es_label"][0], es_label_path, patient, labels),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        info=info or {},
        files=dict(files),
    )

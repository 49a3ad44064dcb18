"""Any NIfTI cohort from a manifest: a CSV or TSV with one row per fixed/moving pair.

Columns ``patient, fixed_image, fixed_label, moving_image, moving_label`` and, optional,
``split`` (train / val / test) and ``group``. Relative paths resolve against the
manifest's folder. Images may be 2D or 3D (3D goes through the same slice choice as
ACDC); spacing is read from pixdim. The fixed frame plays ACDC's ED, the moving one ES.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from featreg.data.acdc import AcdcPatient, read_volumes
from featreg.errors import InputError

REQUIRED_COLUMNS = ("patient", "fixed_image", "fixed_label", "moving_image", "moving_label")
OPTIONAL_COLUMNS = ("split", "group")
ROLES = ("train", "val", "test")
"""Values of the optional ``split`` column."""

FILE_KEYS = {"fixed_image": "ed_image", "fixed_label": "ed_label", "moving_image": "es_image", "moving_label": "es_label"}
"""Manifest column -> the volume it fills (fixed = ED, moving = ES)."""

_PATIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ManifestRow:
    """One pair of a manifest: the manifest, the line, patient id, resolved files, split role and group."""

    manifest: Path
    line: int
    patient: str
    files: dict[str, Path]
    split: str | None
    group: str


def is_manifest(source: str | Path) -> bool:
    """Whether a dataset source is a manifest file (``.csv`` / ``.tsv``) rather than an ACDC folder."""
    return Path(source).suffix.lower() in (".csv", ".tsv")


def read_manifest(path: str | Path) -> dict[str, ManifestRow]:
    """The rows of a manifest by patient, checked: columns, ids, split values, one row per patient.

    Every problem raises InputError naming the manifest, the line and the problem. Files
    are not opened here (that is :func:`read_manifest_patient`, per patient).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest file is missing", path=path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise InputError(
                f"manifest lacks column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}; "
                f"required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})",
                path=path,
            )
        rows: dict[str, ManifestRow] = {}
        for line, raw in enumerate(reader, start=2):
            record = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            rows_patient = record["patient"]
            where = f"line {line}"
            empty = [c for c in REQUIRED_COLUMNS if not record[c]]
            if empty:
                raise InputError(f"{where}: empty {', '.join(empty)}", path=path, patient=rows_patient or None)
            if not _PATIENT_ID.match(rows_patient):
                raise InputError(f"{where}: patient id {rows_patient!r} must be letters, digits, '_', '.' or '-'",
                                 path=path)
            if rows_patient in rows:
                raise InputError(f"{where}: patient {rows_patient} already has a row (line {rows[rows_patient].line})",
                                 path=path)
            split = record.get("split") or None
            if split is not None and split not in ROLES:
                raise InputError(f"{where}: split {split!r} is not one of {', '.join(ROLES)}", path=path,
                                 patient=rows_patient)
            files = {c: (path.parent / record[c]).resolve() if not Path(record[c]).is_absolute() else Path(record[c])
                     for c in FILE_KEYS}
            rows[rows_patient] = ManifestRow(path, line, rows_patient, files, split, record.get("group", ""))
    if not rows:
        raise InputError("manifest has no rows", path=path)
    return rows


def manifest_roles(rows: dict[str, ManifestRow]) -> dict[str, str | None] | None:
    """The ``split`` column (patient -> train / val / test, or None); None when no row has one."""
    roles = {patient: row.split for patient, row in rows.items()}
    return roles if any(roles.values()) else None


def read_manifest_patient(row: ManifestRow, labels: Iterable[int] = (1, 2, 3)) -> AcdcPatient:
    """The fixed (ED) and moving (ES) volumes of one row, checked as an ACDC patient's are (:func:`read_volumes`)."""
    files = {FILE_KEYS[column]: file for column, file in row.files.items()}
    files["manifest"] = row.manifest  # a source too: an edited manifest remakes the pairs
    try:
        return read_volumes(row.patient, files, group=row.group, labels=labels)
    except InputError as exc:
        raise InputError(f"manifest line {row.line}: {exc.problem}", path=exc.path, patient=exc.patient) from None

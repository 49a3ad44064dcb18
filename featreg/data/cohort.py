"""A dataset source, an ACDC folder (either layout) or a manifest file: reading its patients' volumes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from featreg.data.acdc import AcdcPatient, read_patient
from featreg.data.manifest import is_manifest, read_manifest, read_manifest_patient
from featreg.errors import InputError


def patient_reader(source: str | Path, labels: Iterable[int] = (1, 2, 3)) -> Callable[[str], AcdcPatient]:
    """``read(patient)`` for a source: the manifest is parsed once, each patient's files when read."""
    labels = tuple(labels)
    if not is_manifest(source):
        return lambda patient: read_patient(source, patient, labels)
    rows = read_manifest(source)

    def read(patient: str) -> AcdcPatient:
        if patient not in rows:
            raise InputError("patient has no row in the manifest", path=source, patient=patient)
        return read_manifest_patient(rows[patient], labels)

    return read

"""``run.json``: the record of one pair's registration, written last into its result folder.

Its presence means the folder is complete (docs/design.md, "A registration result
on disk"). This module is its only writer and reader: the result writers
(:mod:`featreg.registration.io`), evaluation, resuming and the report all go through it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from featreg.data.pairs import slice_dir
from featreg.errors import InputError
from featreg.io import write_json_atomic

RUN_FILE = "run.json"

REQUIRED = ("patient", "method", "status", "reason", "iterations", "seconds", "peak_memory_mb", "device", "settings")
"""The entries every run.json holds; ``seconds`` is the pair's share of its batch's wall time."""

log = logging.getLogger(__name__)


def write_run(out_dir: str | Path, run: Mapping[str, Any]) -> Path:
    """Write ``run`` as ``out_dir/run.json`` (atomically, last); it must hold :data:`REQUIRED`."""
    missing = [key for key in REQUIRED if key not in run]
    if missing:
        raise ValueError(f"run record lacks {', '.join(missing)}")
    if run["status"] not in ("ok", "failed"):
        raise ValueError(f"run status must be 'ok' or 'failed', got {run['status']!r}")
    return write_json_atomic(Path(out_dir) / RUN_FILE, dict(run))


def read_run(result_dir: str | Path, *, patient: str | None = None) -> dict[str, Any]:
    """The run.json of a result folder, its status checked (``ok`` or ``failed``) and, when
    ``patient`` is given, that it is this patient's."""
    path = Path(result_dir) / RUN_FILE
    if not path.is_file():
        raise InputError("file is missing", path=path, patient=patient)
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable JSON ({exc})", path=path, patient=patient) from exc
    if not isinstance(run, dict) or run.get("status") not in ("ok", "failed"):
        raise InputError('expected a JSON object with "status" "ok" or "failed"', path=path, patient=patient)
    if patient is not None and run.get("patient", patient) != patient:
        raise InputError(f"run is for patient {run['patient']!r}, not {patient!r}", path=path, patient=patient)
    return run


def run_number(run: Mapping[str, Any], key: str) -> float:
    """A numeric entry of a read run record as a float; NaN when it is absent or not a number."""
    value = run.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def is_current(result_dir: str | Path, fingerprint: str | None) -> bool:
    """Whether a result folder holds a finished ``ok`` run with this fingerprint (so it need not be redone)."""
    try:
        run = read_run(result_dir)
    except InputError:
        return False
    return fingerprint is not None and run["status"] == "ok" and run.get("fingerprint") == fingerprint


def result_dir(results_dir: str | Path, method: str, patient: str, slice_index: int | None) -> Path:
    """The result folder of a metrics row: ``<method>/<patient>``, or ``<method>/<patient>/slice<NN>``
    (:func:`featreg.data.pairs.slice_dir`) for a patient with one pair per slice, whose own folder holds
    no run.json (a metrics row records its slice index either way)."""
    folder = Path(results_dir) / method / patient
    if slice_index is None or (folder / RUN_FILE).is_file():
        return folder
    return slice_dir(folder, int(slice_index))


def devices(results_dir: str | Path, rows: Sequence[tuple[str, str, int | None]]) -> list[str]:
    """The devices recorded in the run.json of (method, patient, slice) rows, sorted.

    A missing run.json is skipped; one that cannot be read counts as "unknown", with a warning.
    """
    found = set()
    for method, patient, slice_index in rows:
        folder = result_dir(results_dir, method, patient, slice_index)
        if not (folder / RUN_FILE).is_file():
            continue
        try:
            found.add(str(read_run(folder).get("device", "unknown")))
        except InputError as exc:
            log.warning("device of %s unknown: %s", folder.relative_to(results_dir).as_posix(), exc)
            found.add("unknown")
    return sorted(found)

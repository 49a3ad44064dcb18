"""The tuning selection record (``results/<name>/tuning/selected/<base>.json``): its writer and its checked reader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featreg.errors import InputError
from featreg.io import read_json, write_json_atomic

SELECTION_KEYS = ("base", "tuned", "paper", "rule", "selected", "values", "method", "candidates")
"""The entries of a selection record."""


def write_selection_record(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write a selection record (:func:`featreg.jobs.tuning.select_tuned`) after checking its entries."""
    missing = [key for key in SELECTION_KEYS if key not in record]
    if missing:
        raise ValueError(f"selection record lacks {', '.join(missing)}")
    return write_json_atomic(path, dict(record))


def read_selection(path: str | Path) -> dict[str, Any]:
    """A selection record written by ``featreg select-setting``, checked for its entries."""
    record = read_json(path, "selection record")
    missing = [key for key in SELECTION_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise InputError(f"not a selection record: it lacks {', '.join(missing)}", path=path)
    return record

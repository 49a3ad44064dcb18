"""The method file (``results/<name>/methods/<method>.json``): one method in its one canonical form."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from featreg.errors import InputError
from featreg.experiment.methods import Method
from featreg.io import read_json, write_text_atomic


def write_method_file(method: Method, path: str | Path) -> Path:
    """Write ``method`` to ``path`` in its one canonical form (:meth:`Method.to_json`, sorted keys)."""
    return write_text_atomic(path, method.to_json())


def load_method_file(path: str | Path) -> Method:
    """The method of a method file (``results/<name>/methods/<method>.json``, :func:`write_method_file`)."""
    path = Path(path)
    entries = read_json(path, "method file")
    fields = {f.name for f in dataclasses.fields(Method)}
    if not isinstance(entries, dict) or set(entries) != fields:
        raise InputError(f"not a method file: expected the entries {', '.join(sorted(fields))}", path=path)
    return Method(**entries)

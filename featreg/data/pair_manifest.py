"""The preprocess job's shard manifest (``pairs/shards/<shard>.json``): the options, the pair folders and each
patient's status. Later jobs read their shard's pair folders from it rather than from the command line."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from featreg.errors import InputError, first_line
from featreg.io import write_json_atomic


def write_pair_manifest(path: str | Path, options: Mapping[str, Any], pairs: Sequence[str | Path],
                        statuses: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the manifest of a preprocessed shard: ``options`` as pair.json stores them, the patients'
    folders in shard order and each patient's status."""
    return write_json_atomic(path, {"options": dict(options), "pairs": [str(p) for p in pairs],
                                    "patients": {k: dict(v) for k, v in statuses.items()}})


def read_pair_manifest(path: str | Path) -> dict[str, Any]:
    """A pair manifest (or any shard manifest listing ``pairs``: the feature manifest does too), checked."""
    try:
        record = json.loads(Path(path).read_text())
        pairs = record["pairs"]
        if not isinstance(pairs, list):
            raise TypeError(f"'pairs' is a {type(pairs).__name__}, not a list")
    except FileNotFoundError:
        raise InputError("shard manifest does not exist", path=path) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a shard manifest (JSON with a 'pairs' list): {first_line(exc)}", path=path) from None
    return record


def shard_pair_dirs(manifest: str | Path) -> list[Path]:
    """The patients' pair folders, in shard order, that a shard manifest lists (preprocess's or features')."""
    return [Path(pair) for pair in read_pair_manifest(manifest)["pairs"]]

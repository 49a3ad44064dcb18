"""The features job's shard manifest (``features/<encoder>/<shard>.json``): all a feature method's
register job needs of its shard: the pair folders, the encoder's spec, and pair name -> feature file."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from featreg.encoders.registry import EncoderSpec
from featreg.errors import InputError, first_line
from featreg.io import write_json_atomic


@dataclass(frozen=True)
class FeatureManifest:
    """A read feature manifest: the encoder's spec, the shard's patient folders and the cached files by pair name."""

    spec: EncoderSpec
    pairs: tuple[Path, ...]
    features: Mapping[str, Path]


def write_feature_manifest(path: str | Path, spec: EncoderSpec, pairs: Sequence[str | Path],
                           features: Mapping[str, str | Path]) -> Path:
    """Write the manifest of a shard's cached features (``features``: pair name -> feature file)."""
    record = {"encoder": spec.name, "spec": spec.to_dict(), "pairs": [str(p) for p in pairs],
              "features": {name: str(file) for name, file in features.items()}}
    return write_json_atomic(path, record)


def read_feature_manifest(path: str | Path) -> FeatureManifest:
    """A feature manifest, checked: its encoder spec parses and it lists pairs and feature files."""
    try:
        record = json.loads(Path(path).read_text())
        name, entry, pairs, features = record["encoder"], record["spec"], record["pairs"], record["features"]
        if not isinstance(pairs, list) or not isinstance(features, dict):
            raise TypeError("'pairs' must be a list and 'features' an object")
    except FileNotFoundError:
        raise InputError("feature manifest does not exist", path=path) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a feature manifest of `featreg features`: {first_line(exc)}", path=path) from None
    return FeatureManifest(EncoderSpec.from_dict(name, entry), tuple(map(Path, pairs)),
                           {pair: Path(file) for pair, file in features.items()})

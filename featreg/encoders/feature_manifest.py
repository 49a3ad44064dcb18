"""The features job's shard manifest (``features/<encoder>/<shard>.json``): all a feature method's
register job needs of its shard: the pair folders, the encoder's spec and identity, its layer
channel splits and weights, and pair name -> feature file of the fixed (and, for methods that
encode once, the moving) images."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featreg.encoders.cache import encoding_seconds
from featreg.encoders.features import FeatureEncoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import InputError, first_line
from featreg.io import write_json_atomic


@dataclass(frozen=True)
class FeatureManifest:
    """A read feature manifest: the encoder's spec and identity, the shard's patient folders, the cached
    files by pair name (``moving`` empty when the moving images were not encoded), for an encoder with
    ``layers`` each layer's channel count and weight (else None), and per pair name the seconds encoding
    each image took (``fixed``, ``moving``)."""

    spec: EncoderSpec
    identity: Mapping[str, Any]
    pairs: tuple[Path, ...]
    features: Mapping[str, Path]
    moving: Mapping[str, Path]
    layer_splits: tuple[int, ...] | None
    layer_weights: tuple[float, ...] | None
    encode_seconds: Mapping[str, Mapping[str, float]]


def write_feature_manifest(path: str | Path, spec: EncoderSpec, encoder: FeatureEncoder, pairs: Sequence[str | Path],
                           features: Mapping[str, str | Path], moving: Mapping[str, str | Path] | None = None) -> Path:
    """Write the manifest of a shard's cached features (``features``, ``moving``: pair name -> feature file),
    with the seconds each file's encoding took (:func:`featreg.encoders.cache.encoding_seconds`)."""
    files = {"fixed": features, "moving": moving or {}}
    seconds = {name: {image: encoding_seconds(files[image][name]) for image in files if name in files[image]}
               for name in features}
    record = {"encoder": spec.name, "spec": spec.to_dict(), "identity": encoder.identity(),
              "layer_splits": encoder.layer_splits, "layer_weights": encoder.layer_weights,
              "pairs": [str(p) for p in pairs], "features": {name: str(file) for name, file in features.items()},
              "moving": {name: str(file) for name, file in (moving or {}).items()}, "encode_seconds": seconds}
    return write_json_atomic(path, record)


def read_feature_manifest(path: str | Path) -> FeatureManifest:
    """A feature manifest, checked: its encoder spec parses and it lists pairs and feature files."""
    try:
        record = json.loads(Path(path).read_text())
        name, entry, pairs, features = record["encoder"], record["spec"], record["pairs"], record["features"]
        identity, moving = record["identity"], record["moving"]
        splits, weights, seconds = record["layer_splits"], record["layer_weights"], record["encode_seconds"]
        if not isinstance(pairs, list) or not isinstance(features, dict) or not isinstance(moving, dict):
            raise TypeError("'pairs' must be a list, 'features' and 'moving' objects")
    except FileNotFoundError:
        raise InputError("feature manifest does not exist", path=path) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"not a feature manifest of `featreg features`: {first_line(exc)}", path=path) from None
    return FeatureManifest(
        EncoderSpec.from_dict(name, entry), identity, tuple(map(Path, pairs)),
        {pair: Path(file) for pair, file in features.items()}, {pair: Path(file) for pair, file in moving.items()},
        None if splits is None else tuple(splits), None if weights is None else tuple(weights), seconds)

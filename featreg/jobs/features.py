"""The features job: cache the fixed-image features of a shard's pairs, and find a method's encoder spec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from featreg.data.pairs import expand_pair_outputs, pair_name
from featreg.devices import resolve_device
from featreg.encoders.cache import cache_fixed_features
from featreg.encoders.feature_manifest import read_feature_manifest, write_feature_manifest
from featreg.encoders.registry import EncoderSpec, load_specs
from featreg.errors import ConfigError
from featreg.experiment.methods import Method


def features_shard(
    spec: EncoderSpec, pair_dirs: Sequence[str | Path], out_dir: str | Path, manifest: str | Path | None, device: str = "auto"
) -> dict[Path, Path]:
    """Cache the fixed-image features of a shard's pairs in ``out_dir/<patient>.pt``; write the manifest last.

    A patient with one pair per slice gets one file per slice
    (:func:`featreg.data.pairs.expand_pair_outputs`). The manifest is all a feature
    method's register job needs of the shard (:mod:`featreg.encoders.feature_manifest`).
    """
    out_paths = [Path(out_dir) / f"{Path(pair).name}.pt" for pair in pair_dirs]
    pairs, outs = zip(*expand_pair_outputs(pair_dirs, out_paths))
    written = cache_fixed_features(spec, pairs, outs, str(resolve_device(device)))
    if manifest is not None:
        write_feature_manifest(manifest, spec, pair_dirs, {pair_name(pair): path for pair, path in written.items()})
    return written


def method_encoder_spec(
    method: Method, spec_files: Sequence[str | Path] | None, features_manifest: str | Path | None = None
) -> EncoderSpec | None:
    """The spec of ``method``'s encoder from ``spec_files``, else from the feature manifest (None without an encoder)."""
    if method.encoder is None:
        return None
    if not spec_files and features_manifest is not None:
        spec = read_feature_manifest(features_manifest).spec
        if spec.name != method.encoder:
            raise ConfigError(f"method {method.name} uses encoder {method.encoder}, but {features_manifest} holds {spec.name}'s features")
        return spec
    if not spec_files:
        raise ConfigError(f"method {method.name} uses encoder {method.encoder}: give its encoder spec file or feature manifest")
    specs = load_specs(spec_files)
    if method.encoder not in specs:
        raise ConfigError(f"encoder {method.encoder} of method {method.name} is not in {', '.join(map(str, spec_files))}")
    return specs[method.encoder]


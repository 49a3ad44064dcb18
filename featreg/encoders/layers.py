"""Features from several layers of an encoder: checking a selection, and the feature distance over it.

An encoder with ``layers`` returns the selected layers, each resized to the common
grid, concatenated along channels; ``FeatureEncoder.layer_splits`` records each
layer's channel count and ``FeatureEncoder.layer_weights`` its weight. The feature
distance is then the weighted mean of the per-layer distances
(:func:`featreg.registration.losses.layered_distance`), so a layer counts by its weight,
not by its channels.

Nothing here imports torch: the registry checks selections when the Snakefile is parsed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from featreg.errors import ConfigError


def check_layers(where: str, kind: str, layers: Any, weights: Any, count: int | None) -> tuple[tuple[int, ...], tuple[float, ...] | None]:
    """``layers`` and ``layer_weights`` of a config entry as tuples; ``ConfigError`` (one line, starting ``where``) otherwise.

    ``layers`` are strictly increasing 0-based indices into the kind's list of
    selectable outputs; ``count`` is that list's length, or None where only a build
    knows it (checked then by :func:`check_layer_range`). ``weights`` (optional)
    are non-negative numbers, one per layer, not all zero.
    """
    if (
        not isinstance(layers, Sequence)
        or isinstance(layers, str)
        or not layers
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
    ):
        raise ConfigError(f"{where}: layers must be a non-empty list of layer indices, got {layers!r}")
    layers = tuple(layers)
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ConfigError(f"{where}: layers must be strictly increasing, got {list(layers)}")
    check_layer_range(where, kind, layers, count)
    if weights is None:
        return layers, None
    if (
        not isinstance(weights, Sequence)
        or isinstance(weights, str)
        or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights)
        or not any(weights)
    ):
        raise ConfigError(f"{where}: layer_weights must be non-negative numbers, not all zero, got {weights!r}")
    if len(weights) != len(layers):
        raise ConfigError(f"{where}: layer_weights has {len(weights)} entries for {len(layers)} layers")
    return layers, tuple(float(w) for w in weights)


def check_layer_range(where: str, kind: str, layers: Sequence[int], count: int | None) -> None:
    """Every index of ``layers`` within ``0 .. count - 1`` (only non-negative when ``count`` is None)."""
    for i in layers:
        if i < 0 or (count is not None and i >= count):
            known = f"kind {kind!r} has {count} selectable layers (0 to {count - 1})" if count is not None else "indices start at 0"
            raise ConfigError(f"{where}: layer index {i} is out of range; {known}; `featreg encoder-layers {kind}` lists them")

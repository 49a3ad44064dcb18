"""Encoder specs (named config entries) and the factory table that builds them."""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featreg.encoders.layers import check_layers
from featreg.errors import ConfigError

NORMALISATIONS = ("none", "imagenet")
# Encoder arithmetic: "auto" is bf16 autocast for kinds with learnt weights on CUDA, float32 otherwise.
DTYPES = ("auto", "float32", "bf16")

# kind -> "module:function"; imported on first use so that building MIND never imports timm.
_FACTORIES: dict[str, str | Callable[["EncoderSpec"], Any]] = {
    "dinov2": "featreg.encoders.dinov2:build_dinov2",
    "sam": "featreg.encoders.sam:build_sam",
    "timm": "featreg.encoders.timm_encoder:build_timm",
    "litemedsam": "featreg.encoders.litemedsam:build_litemedsam",
    "mind": "featreg.encoders.mind:build_mind",
    "vgg16": "featreg.encoders.vgg16:build_vgg16",
}
# Kinds whose features mean nothing without weights: no checkpoint and no random_init is an error.
NEEDS_CHECKPOINT = {"dinov2", "sam", "timm"}
# Kinds without learnt weights.
WEIGHTLESS = {"mind"}
# Kinds that scale their input themselves (MIND: none; vgg16: LPIPS's own scaling).
OWN_INPUT_SCALING = {"mind", "vgg16"}
# kind -> the number of selectable layers of a spec, known without building it (None: only the
# build knows, and checks then). These repeat the kinds' defaults (sam.VIT_B depth 12 + the neck,
# dinov2's ViT-B depth 12, TinyViT's 4 stages + the neck, VGG16's 5 stages); tests/encoders/test_layers.py
# checks them against the builds.
_LAYER_COUNTS: dict[str, Callable[["EncoderSpec"], int | None]] = {
    "dinov2": lambda spec: spec.arch.get("depth", 12) if spec.model in (None, "vit_base_patch14_reg4_dinov2") else None,
    "sam": lambda spec: spec.arch.get("depth", 12) + 1,
    "litemedsam": lambda spec: 5,
    "vgg16": lambda spec: 5,
}


def known_kinds() -> list[str]:
    return sorted(_FACTORIES)


def register_kind(
    kind: str,
    factory: Callable[["EncoderSpec"], Any],
    *,
    needs_checkpoint: bool = True,
    layer_count: Callable[["EncoderSpec"], int | None] | None = None,
) -> None:
    """Add a kind: ``factory(spec) -> featreg.encoders.features.Backbone``; ``layer_count(spec)``
    lets a spec's ``layers`` be range-checked when it is read (else when it is built)."""
    if kind in _FACTORIES:
        raise ConfigError(f"encoder kind {kind!r} is already registered")
    _FACTORIES[kind] = factory
    if needs_checkpoint:
        NEEDS_CHECKPOINT.add(kind)
    if layer_count is not None:
        _LAYER_COUNTS[kind] = layer_count


def layer_count(spec: "EncoderSpec") -> int | None:
    """How many selectable layers ``spec``'s kind offers, where known without building it."""
    count = _LAYER_COUNTS.get(spec.kind)
    return count(spec) if count is not None else None


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder as named in the config.

    ``input_size`` is the side of the square image the backbone sees (None: the
    kind's default; for MIND and VGG16 the image's own size). ``grid`` is the side of the
    common feature grid (None: the backbone's native output size). ``layers`` selects
    outputs of the backbone by index (None: its usual output), ``layer_weights`` weighs
    them in the feature distance (None: equally); see :mod:`featreg.encoders.layers`.
    """

    name: str
    kind: str
    checkpoint: Path | None = None
    sha256: str | None = None
    input_size: int | None = None
    grid: int | None = 64
    normalisation: str = "none"
    random_init: bool = False
    seed: int = 0
    arch: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    dtype: str = "auto"
    layers: tuple[int, ...] | None = None
    layer_weights: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, name: str, d: Mapping[str, Any]) -> "EncoderSpec":
        """Validate a config entry; every problem raises ``ConfigError`` naming the encoder."""
        where = f"encoder {name!r}"
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
        allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(allowed)}")
        if "kind" not in d:
            raise ConfigError(f"{where}: missing field 'kind'; known kinds: {', '.join(known_kinds())}")
        kind = d["kind"]
        if kind not in _FACTORIES:
            raise ConfigError(f"{where}: unknown kind {kind!r}; known kinds: {', '.join(known_kinds())}")
        values = dict(d)
        for key in ("input_size", "grid"):
            v = values.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{where}: {key} must be a positive integer or null, got {v!r}")
        if not isinstance(values.get("seed", 0), int) or isinstance(values.get("seed", 0), bool):
            raise ConfigError(f"{where}: seed must be an integer, got {values['seed']!r}")
        if not isinstance(values.get("random_init", False), bool):
            raise ConfigError(f"{where}: random_init must be true or false, got {values['random_init']!r}")
        if values.get("normalisation", "none") not in NORMALISATIONS:
            raise ConfigError(
                f"{where}: normalisation must be one of {', '.join(NORMALISATIONS)}, got {values['normalisation']!r}"
            )
        if values.get("dtype", "auto") not in DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {values['dtype']!r}")
        if not isinstance(values.get("arch", {}), Mapping):
            raise ConfigError(f"{where}: arch must be a mapping, got {values['arch']!r}")
        values["arch"] = dict(values.get("arch", {}))
        if values.get("checkpoint") is not None:
            values["checkpoint"] = Path(values["checkpoint"]).expanduser()
        spec = cls(name=name, **values)
        spec._check_weights()
        return spec._check_layers()

    def _check_weights(self) -> None:
        where = f"encoder {self.name!r}"
        if self.kind in OWN_INPUT_SCALING and self.normalisation != "none":
            raise ConfigError(f"{where}: kind {self.kind!r} takes normalisation 'none' only")
        if self.kind in WEIGHTLESS:
            if self.random_init or self.checkpoint is not None:
                raise ConfigError(f"{where}: kind {self.kind!r} has no weights; remove checkpoint and random_init")
            return
        if self.random_init and self.checkpoint is not None:
            raise ConfigError(f"{where}: random_init is true, so checkpoint must be null (a random control never loads weights)")
        if not self.random_init and self.checkpoint is None and self.kind in NEEDS_CHECKPOINT:
            raise ConfigError(
                f"{where}: kind {self.kind!r} needs a checkpoint; set checkpoint to the weights file, "
                "or random_init: true for a random-weight control (featreg never falls back to random weights)"
            )
        if self.kind == "timm" and not self.model:
            raise ConfigError(f"{where}: kind 'timm' needs model (a timm model name)")

    def _check_layers(self) -> "EncoderSpec":
        """The spec with ``layers`` and ``layer_weights`` as checked tuples."""
        where = f"encoder {self.name!r}"
        if self.layers is None:
            if self.layer_weights is not None:
                raise ConfigError(f"{where}: layer_weights needs layers")
            return self
        if self.kind in WEIGHTLESS:
            raise ConfigError(f"{where}: kind {self.kind!r} has no layers to select; remove layers")
        if self.grid is None:
            raise ConfigError(f"{where}: layers need a grid (the common grid every selected layer is resized to), got grid null")
        layers, weights = check_layers(where, self.kind, self.layers, self.layer_weights, layer_count(self))
        return dataclasses.replace(self, layers=layers, layer_weights=weights)

    def compute_dtype(self, device_type: str) -> str:
        """The encoder's arithmetic on ``device_type`` (``"float32"`` or ``"bf16"``); ``auto``: bf16 for learnt weights on CUDA."""
        if self.dtype == "auto":
            return "bf16" if device_type == "cuda" and self.kind not in WEIGHTLESS else "float32"
        return self.dtype

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("name")
        d["checkpoint"] = str(self.checkpoint) if self.checkpoint is not None else None
        for key in ("layers", "layer_weights"):
            d[key] = list(d[key]) if d[key] is not None else None
        return d


def load_encoder_specs(path: str | Path) -> dict[str, EncoderSpec]:
    """Read specs from a YAML/JSON file: either ``{encoders: {name: {...}}}`` or ``{name: {...}}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"encoder config {path} does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"encoder config {path} is unreadable: {exc}") from exc
    if isinstance(data, Mapping) and "encoders" in data:
        data = data["encoders"]
    if not isinstance(data, Mapping):
        raise ConfigError(f"encoder config {path}: expected a mapping of encoder names to entries")
    return {name: EncoderSpec.from_dict(name, entry) for name, entry in data.items()}


def load_specs(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> dict[str, EncoderSpec]:
    """The specs named ``names`` (all, when None) among the files ``paths``, later files overriding earlier ones."""
    specs: dict[str, EncoderSpec] = {}
    for path in paths:
        specs.update(load_encoder_specs(path))
    missing = [name for name in names or [] if name not in specs]
    if missing:
        files = ", ".join(map(str, paths))
        raise ConfigError(f"encoder(s) {', '.join(missing)} not in {files}; known: {', '.join(specs)}")
    return {name: specs[name] for name in (names or specs)}


def kind_factory(spec: EncoderSpec) -> Callable[[EncoderSpec], Any]:
    """The factory of ``spec``'s kind (imported on first use); it returns a ``featreg.encoders.features.Backbone``."""
    if spec.kind not in _FACTORIES:
        raise ConfigError(f"encoder {spec.name!r}: unknown kind {spec.kind!r}; known kinds: {', '.join(known_kinds())}")
    target = _FACTORIES[spec.kind]
    if callable(target):
        return target
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)

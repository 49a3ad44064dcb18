"""The method model: one registration method, and the table of all methods a config runs.

Pure functions over the validated config dict (``workflow/schemas/config.schema.yaml``,
which fills in every default: nothing here falls back to a default of its own); the
checks parse every method and encoder as its job will, before any job runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError
from featreg.registration.elastix import ElastixSettings
from featreg.registration.settings import RegistrationSettings

KINDS = ("ffd", "elastix")
"""Registration engines: featreg's PyTorch FFD, or elastix's B-spline (featreg.registration.elastix)."""


@dataclass(frozen=True)
class Method:
    """One registration method: an engine, an objective and its settings.

    For the FFD (``kind`` ffd), ``alpha`` weights the feature term: 0 is the intensity
    baseline, 1 is variant 1 (features only), anything between is variant 2 (features
    + intensity). An elastix method (``kind`` elastix) has no feature term; its
    ``settings`` are :class:`~featreg.registration.elastix.ElastixSettings`, checked here.
    """

    name: str
    alpha: float = 0.0
    encoder: str | None = None
    distance: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "ffd"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"method {self.name}: kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "elastix":
            if self.alpha != 0 or self.encoder is not None or self.distance is not None:
                raise ConfigError(f"method {self.name}: an elastix method takes no alpha, encoder or distance")
            try:
                ElastixSettings.from_dict(self.settings)
            except ConfigError as exc:
                raise ConfigError(f"method {self.name}: {exc}") from exc
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"method {self.name}: alpha must be in [0, 1], got {self.alpha}")
        if self.alpha > 0 and (self.encoder is None or self.distance is None):
            raise ConfigError(f"method {self.name}: alpha {self.alpha} > 0 needs an encoder and a distance")
        if self.alpha == 0 and self.encoder is not None:
            raise ConfigError(f"method {self.name}: an encoder is given but alpha is 0, so it would never be used")

    @property
    def variant(self) -> str:
        """``classical`` (elastix), ``baseline`` (alpha 0), ``feature`` (variant 1, alpha 1) or ``combined`` (variant 2)."""
        if self.kind == "elastix":
            return "classical"
        if self.alpha == 0:
            return "baseline"
        return "feature" if self.alpha == 1 else "combined"

    def registration_settings(self) -> dict[str, Any]:
        """Settings for ``RegistrationSettings.from_dict``: the method's own plus its objective."""
        return {**self.settings, "alpha": self.alpha, "feature_distance": self.distance}

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"settings": dict(self.settings)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Method:
        return cls(**json.loads(text))


def method_table(config: Mapping[str, Any]) -> dict[str, Method]:
    """All methods of a config: the explicit ones, the encoder grid and the alpha sweep.

    Grid names are ``<encoder>-<distance>-v1`` (alpha 1) and ``-v2`` (``combined_alpha``);
    sweep names are ``<encoder>-<distance>-a<alpha>``. A sweep point equal to a method
    already present (same encoder, distance and alpha) is not run twice.
    """
    defaults = dict(config["registration"])
    encoders = config["encoders"]
    methods: dict[str, Method] = {}

    def add(method: Method) -> None:
        if method.name in methods:
            raise ConfigError(f"method {method.name} is defined twice")
        if method.encoder is not None and method.encoder not in encoders:
            known = ", ".join(sorted(encoders)) or "none"
            raise ConfigError(f"method {method.name}: unknown encoder {method.encoder!r} (encoders: {known})")
        methods[method.name] = method

    for name, entry in config["methods"].items():
        kind = entry["kind"]
        add(
            Method(
                name=name,
                alpha=float(entry["alpha"]),
                encoder=entry["encoder"],
                distance=entry["distance"],
                # the registration block holds the FFD's defaults; an elastix method has its own
                settings={**(defaults if kind == "ffd" else {}), **entry["settings"]},
                kind=kind,
            )
        )
    grid = config["grid"]
    combined_alpha = float(grid["combined_alpha"])
    for encoder in grid["encoders"]:
        for distance in grid["distances"]:
            for variant in grid["variants"]:
                alpha = 1.0 if variant == "feature" else combined_alpha
                suffix = "v1" if variant == "feature" else "v2"
                add(Method(f"{encoder}-{distance}-{suffix}", alpha, encoder, distance, defaults))
    sweep = config.get("alpha_sweep")  # an optional block, without defaults
    if sweep:
        present = {(m.encoder, m.distance, m.alpha) for m in methods.values()}
        for alpha in sweep["alphas"]:
            alpha = float(alpha)
            if alpha == 0 or (sweep["encoder"], sweep["distance"], alpha) in present:
                continue
            name = f"{sweep['encoder']}-{sweep['distance']}-a{value_label(alpha)}"
            add(Method(name, alpha, sweep["encoder"], sweep["distance"], defaults))
    baseline = config["baseline"]
    if baseline not in methods:
        raise ConfigError(f"baseline method {baseline!r} is not among the methods ({', '.join(methods)})")
    if methods[baseline].variant != "baseline":
        raise ConfigError(f"baseline method {baseline!r} must be an FFD method with alpha 0")
    return methods


def value_label(value: Any) -> str:
    """A setting's value as text in names and labels: numbers ``:g`` (0.125, 1e-05), lists ``24x24``."""
    if isinstance(value, (list, tuple)):
        return "x".join(value_label(v) for v in value)
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def check_labels(config: Mapping[str, Any]) -> None:
    """The label classes name distinct values (the schema checks names and ranges)."""
    labels = config["labels"]
    if len(set(labels.values())) != len(labels):
        raise ConfigError(f"labels give two classes the same value: {labels}")


def encoder_specs(config: Mapping[str, Any]) -> dict[str, EncoderSpec]:
    """Every encoder entry parsed as its jobs parse it; ConfigError names the encoder, the key and the known keys."""
    return {name: EncoderSpec.from_dict(name, entry) for name, entry in config["encoders"].items()}


def check_methods(config: Mapping[str, Any], methods: Mapping[str, Method]) -> None:
    """Parse the ``registration`` block and every method's settings as the registration job will.

    ``methods`` are all the methods the config runs (explicit, grid, α sweep, tuning grid
    points and paper rows). ConfigError names the block or method, the key and the known keys.
    """
    try:
        RegistrationSettings.check_keys(config["registration"])
    except ConfigError as exc:
        raise ConfigError(f"registration: {exc}") from None
    for method in methods.values():
        try:
            if method.kind == "elastix":
                ElastixSettings.from_dict(method.settings)
            else:
                RegistrationSettings.from_dict(method.registration_settings())
        except ConfigError as exc:
            raise ConfigError(f"method {method.name}: {exc}") from None

"""An experiment config expanded into what the workflow runs: patients, shards and methods.

Pure functions over the validated config dict (``workflow/schemas/config.schema.yaml``),
so the Snakefile and the tests share one expansion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from featreg.errors import ConfigError

VARIANT_ALPHA = {"feature": 1.0}


@dataclass(frozen=True)
class Method:
    """One registration method: an objective and its settings.

    ``alpha`` weights the feature term: 0 is the intensity baseline, 1 is variant 1
    (features only), anything between is variant 2 (features + intensity).
    """

    name: str
    alpha: float = 0.0
    encoder: str | None = None
    distance: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"method {self.name}: alpha must be in [0, 1], got {self.alpha}")
        if self.alpha > 0 and (self.encoder is None or self.distance is None):
            raise ConfigError(f"method {self.name}: alpha {self.alpha} > 0 needs an encoder and a distance")
        if self.alpha == 0 and self.encoder is not None:
            raise ConfigError(f"method {self.name}: an encoder is given but alpha is 0, so it would never be used")

    @property
    def variant(self) -> str:
        """``baseline`` (alpha 0), ``feature`` (variant 1, alpha 1) or ``combined`` (variant 2)."""
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


def _alpha_label(alpha: float) -> str:
    return f"a{alpha:.2f}".rstrip("0").rstrip(".")


def method_table(config: Mapping[str, Any]) -> dict[str, Method]:
    """All methods of a config: the explicit ones, the encoder grid and the alpha sweep.

    Grid names are ``<encoder>-<distance>-v1`` (alpha 1) and ``-v2`` (``combined_alpha``);
    sweep names are ``<encoder>-<distance>-a<alpha>``. A sweep point equal to a method
    already present (same encoder, distance and alpha) is not run twice.
    """
    defaults = dict(config.get("registration", {}))
    encoders = config.get("encoders", {})
    methods: dict[str, Method] = {}

    def add(method: Method) -> None:
        if method.name in methods:
            raise ConfigError(f"method {method.name} is defined twice")
        if method.encoder is not None and method.encoder not in encoders:
            known = ", ".join(sorted(encoders)) or "none"
            raise ConfigError(f"method {method.name}: unknown encoder {method.encoder!r} (encoders: {known})")
        methods[method.name] = method

    for name, entry in config.get("methods", {}).items():
        add(
            Method(
                name=name,
                alpha=float(entry.get("alpha", 0.0)),
                encoder=entry.get("encoder"),
                distance=entry.get("distance"),
                settings={**defaults, **entry.get("settings", {})},
            )
        )
    grid = config.get("grid", {})
    combined_alpha = float(grid.get("combined_alpha", 0.3))
    for encoder in grid.get("encoders", []):
        for distance in grid.get("distances", ["cosine", "l1"]):
            for variant in grid.get("variants", ["feature", "combined"]):
                alpha = 1.0 if variant == "feature" else combined_alpha
                suffix = "v1" if variant == "feature" else "v2"
                add(Method(f"{encoder}-{distance}-{suffix}", alpha, encoder, distance, defaults))
    sweep = config.get("alpha_sweep")
    if sweep:
        present = {(m.encoder, m.distance, m.alpha) for m in methods.values()}
        for alpha in sweep["alphas"]:
            alpha = float(alpha)
            if alpha == 0 or (sweep["encoder"], sweep["distance"], alpha) in present:
                continue
            name = f"{sweep['encoder']}-{sweep['distance']}-{_alpha_label(alpha)}"
            add(Method(name, alpha, sweep["encoder"], sweep["distance"], defaults))
    baseline = config.get("baseline", "ncc")
    if baseline not in methods:
        raise ConfigError(f"baseline method {baseline!r} is not among the methods ({', '.join(methods)})")
    if methods[baseline].variant != "baseline":
        raise ConfigError(f"baseline method {baseline!r} must have alpha 0")
    return methods


def shard_patients(patients: Sequence[str], shard_size: int) -> dict[str, list[str]]:
    """Split patients into shards of ``shard_size`` consecutive ids in sorted order.

    Shard ``s000`` holds the first ``shard_size`` patients, ``s001`` the next, and so
    on. Appending patients with higher ids changes only the last shard and adds new
    ones, so a grown cohort reruns only those.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    ordered = sorted(patients, key=patient_number)
    return {f"s{i // shard_size:03d}": ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)}


def patient_number(patient: str) -> int:
    """The number in a patient id such as ``patient001``."""
    if not patient.startswith("patient") or not patient[7:].isdigit():
        raise ConfigError(f"patient id {patient!r} is not of the form patientNNN")
    return int(patient[7:])

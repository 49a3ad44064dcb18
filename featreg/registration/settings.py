"""Registration settings: one frozen, validated record per method."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from featreg.errors import ConfigError

# The choices a config may name. Plain names, so that checking a config (at DAG build)
# never imports torch; the engine's tables (losses, regularisers, bspline) use the same names.
ORDERS = (1, 3)
"""Supported kernel orders: 1 (tent, as the paper's airlab runs) and 3 (cubic, a standard FFD)."""
PLACEMENTS = ("centred", "airlab")
"""Control-point placements: centred on the image, or airlab's (:func:`featreg.registration.bspline.knot_positions`)."""
SQUARING_CONVENTIONS = ("exact", "airlab")
"""Sampling inside scaling and squaring (:func:`featreg.registration.bspline.scaling_and_squaring`)."""
REGULARISERS = ("airlab", "physical")
IMAGE_DISTANCE_NAMES = ("ncc", "mse")
FEATURE_DISTANCE_NAMES = ("cosine", "l1")


@dataclasses.dataclass(frozen=True)
class RegistrationSettings:
    """What to optimise and how; checked on construction.

    ``lattice`` (control points per axis) and ``control_spacing_px`` are
    alternatives: give exactly one; ``lattice_placement`` ``airlab`` puts the
    control points as airlab does and takes ``control_spacing_px`` (an integer
    stride). ``squaring_convention`` is the sampling inside scaling and squaring
    (:func:`~featreg.registration.bspline.scaling_and_squaring`). Objective per pair:
    ``(1 - alpha)·image + alpha·feature + lam·regulariser``. ``early_stop_rtol``
    stops a pair once its loss changed by less than that fraction over the last
    ``EARLY_STOP_WINDOW`` iterations (off when None).
    """

    lattice: tuple[int, int] | None = (24, 24)
    control_spacing_px: float | None = None
    lattice_placement: str = "centred"
    order: int = 3
    diffeomorphic: bool = False
    squaring_steps: int = 7
    squaring_convention: str = "exact"
    regulariser: str = "airlab"
    lam: float = 120.0
    lr: float = 5e-4
    iterations: int = 1500
    alpha: float = 0.0
    image_distance: str = "ncc"
    feature_distance: str | None = None
    early_stop_rtol: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lattice is not None:
            lattice = tuple(self.lattice)
            if len(lattice) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) for k in lattice):
                raise ConfigError(f"lattice must be two integers, got {self.lattice!r}")
            object.__setattr__(self, "lattice", lattice)
        if (self.lattice is None) == (self.control_spacing_px is None):
            raise ConfigError("give exactly one of lattice and control_spacing_px")
        if self.control_spacing_px is not None and not self.control_spacing_px > 0:
            raise ConfigError(f"control_spacing_px must be positive, got {self.control_spacing_px!r}")
        if self.lattice_placement not in PLACEMENTS:
            raise ConfigError(f"lattice_placement must be one of {list(PLACEMENTS)}, got {self.lattice_placement!r}")
        if self.lattice_placement == "airlab" and (self.control_spacing_px is None or self.control_spacing_px != int(self.control_spacing_px)):
            raise ConfigError(
                f"lattice_placement 'airlab' takes control_spacing_px, an integer stride in px (airlab's sigma), "
                f"not a lattice; got control_spacing_px {self.control_spacing_px!r}"
            )
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {list(ORDERS)}, got {self.order!r}")
        minimum = 4 if self.order == 3 else 2
        if self.lattice is not None and min(self.lattice) < minimum:
            raise ConfigError(f"lattice needs at least {minimum} control points per axis for order {self.order}, got {self.lattice!r}")
        if not isinstance(self.squaring_steps, int) or self.squaring_steps < 1:
            raise ConfigError(f"squaring_steps must be an integer >= 1, got {self.squaring_steps!r}")
        if self.squaring_convention not in SQUARING_CONVENTIONS:
            raise ConfigError(f"squaring_convention must be one of {list(SQUARING_CONVENTIONS)}, got {self.squaring_convention!r}")
        if self.regulariser not in REGULARISERS:
            raise ConfigError(f"regulariser must be one of {list(REGULARISERS)}, got {self.regulariser!r}")
        if not self.lam >= 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.image_distance not in IMAGE_DISTANCE_NAMES:
            raise ConfigError(f"image_distance must be one of {list(IMAGE_DISTANCE_NAMES)}, got {self.image_distance!r}")
        if self.feature_distance is not None and self.feature_distance not in FEATURE_DISTANCE_NAMES:
            raise ConfigError(f"feature_distance must be one of {list(FEATURE_DISTANCE_NAMES)} or None, got {self.feature_distance!r}")
        if self.alpha > 0 and self.feature_distance is None:
            raise ConfigError(f"alpha = {self.alpha} needs a feature_distance (one of {list(FEATURE_DISTANCE_NAMES)})")
        if self.early_stop_rtol is not None and not self.early_stop_rtol > 0:
            raise ConfigError(f"early_stop_rtol must be > 0 or None, got {self.early_stop_rtol!r}")

    @classmethod
    def check_keys(cls, d: Mapping[str, Any]) -> None:
        """Refuse keys that are not settings, naming them and the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown registration setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RegistrationSettings":
        """Build from a mapping (e.g. a config section); unknown keys are an error."""
        cls.check_keys(d)
        values = dict(d)
        if isinstance(values.get("lattice"), list):
            values["lattice"] = tuple(values["lattice"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (lattice as a list)."""
        d = dataclasses.asdict(self)
        if d["lattice"] is not None:
            d["lattice"] = list(d["lattice"])
        return d

    @classmethod
    def paper(cls, **overrides: Any) -> "RegistrationSettings":
        """The paper's airlab setup (docs/references.md, "airlab"; docs/design.md lists what still differs).

        airlab's ``BsplineTransformation(sigma=[6, 6], order=1, diffeomorphic=True)``:
        tent kernel, airlab's placement at a 6 px stride (24×24 points on 128×128),
        10 scaling-and-squaring steps sampled as airlab does; airlab's diffusion
        with λ 120, Adam lr 5e-4, 1500 iterations.
        """
        base = dict(
            lattice=None, control_spacing_px=6.0, lattice_placement="airlab", order=1, diffeomorphic=True, squaring_steps=10,
            squaring_convention="airlab", regulariser="airlab", lam=120.0, lr=5e-4, iterations=1500,
        )
        base.update(overrides)
        return cls(**base)


EARLY_STOP_WINDOW = 10
"""Iterations over which early stopping measures the relative loss change."""

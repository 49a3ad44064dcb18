"""The tuning protocol: each tuned method's grid on the validation split, its paper row and its tuned row.

Every tuned method, the baseline included, gets the same budget of grid points
(docs/design.md, "Tuning").
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from featreg.errors import ConfigError
from featreg.experiment.methods import Method, value_label


PAPER_SETTINGS: dict[str, Any] = {
    "lam": 120.0, "lr": 5e-4, "iterations": 1500, "lattice": None, "control_spacing_px": 6, "lattice_placement": "airlab",
}
"""The paper's fixed settings (λ, Adam learning rate, iterations, and airlab's control points at a 6 px stride:
24×24 on 128×128), as in ``RegistrationSettings.paper()`` (not imported: parsing a config stays free of torch)."""

TUNABLE = {"lam": "lam", "lr": "lr", "iterations": "it", "lattice": "lat", "alpha": "a", "bending_weight": "bw",
           "grid_spacing_mm": "gs"}
"""Keys a tuning grid may vary, in name order, with their label in grid-point names."""

TUNABLE_BY_KIND = {
    "ffd": ("lam", "lr", "iterations", "lattice", "alpha"),
    "elastix": ("bending_weight", "iterations", "grid_spacing_mm"),
}
"""The keys of :data:`TUNABLE` that apply to each method kind."""

TUNED_SUFFIX = "@tuned"
PAPER_SUFFIX = "@paper"


def _with_settings(method: Method, name: str, values: Mapping[str, Any]) -> Method:
    """``method`` renamed, with ``values`` (TUNABLE keys) replacing its alpha and settings."""
    settings = {**method.settings, **{k: v for k, v in values.items() if k != "alpha"}}
    # lattice and control_spacing_px are alternatives: the one that values sets replaces the other.
    if "lattice" in values and "control_spacing_px" not in values:
        settings.pop("control_spacing_px", None)
    if "control_spacing_px" in values and "lattice" not in values:
        settings["lattice"] = None
    return replace(method, name=name, alpha=float(values.get("alpha", method.alpha)), settings=settings)


def expand_grid(method: Method, grid: Mapping[str, Sequence[Any]]) -> dict[str, Method]:
    """Every point of ``grid`` ({key: values}, keys from :data:`TUNABLE`) as a method.

    Names are ``<method>@<label><value>_...`` in :data:`TUNABLE` order, e.g.
    ``ncc@lam60_lr0.0005``: derived from the values, so adding a value adds names
    and keeps the others (their results are reused).
    """
    tunable = TUNABLE_BY_KIND[method.kind]
    unknown = sorted(set(grid) - set(tunable))
    if unknown:
        raise ConfigError(f"tuning grid of {method.name}: unknown key(s) {', '.join(unknown)} for kind {method.kind} "
                          f"(tunable: {', '.join(tunable)})")
    keys = [k for k in TUNABLE if k in grid]
    if "alpha" in grid:
        if method.variant != "combined":
            raise ConfigError(f"tuning grid of {method.name}: alpha is tuned only for a variant-2 method "
                              f"(0 < alpha < 1), not a {method.variant} one")
        outside = [a for a in grid["alpha"] if not 0 < a < 1]
        if outside:
            raise ConfigError(f"tuning grid of {method.name}: alpha values must lie strictly between 0 and 1 "
                              f"(0 is the baseline, 1 variant 1), got {outside}")
    for key in keys:
        labels = [value_label(v) for v in grid[key]]
        if not labels:
            raise ConfigError(f"tuning grid of {method.name}: {key} has no values")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"tuning grid of {method.name}: {key} repeats a value ({grid[key]})")
    points = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        name = f"{method.name}@" + "_".join(f"{TUNABLE[k]}{value_label(v)}" for k, v in values.items())
        points[name] = _with_settings(method, name, values)
    return points


def grid_values(method: Method, keys: Sequence[str]) -> dict[str, Any]:
    """The values of ``keys`` (TUNABLE) that ``method`` runs with."""
    return {k: method.alpha if k == "alpha" else method.settings.get(k) for k in keys}


@dataclass(frozen=True)
class TuningPlan:
    """The tuning protocol of a config: grids on the validation split, paper and tuned rows on test.

    ``grids`` maps each tuned base method to its grid-point methods (validation
    split); ``keys`` to the grid keys it varies; ``paper`` to its method at the paper's
    settings (the base method itself when its settings already are the paper's);
    ``select`` is the selection rule. The tuned method ``<base>@tuned`` runs on the
    test split with the settings the selection job wrote.
    """

    grids: Mapping[str, Mapping[str, Method]]
    keys: Mapping[str, tuple[str, ...]]
    paper: Mapping[str, Method]
    select: Mapping[str, Any]

    @property
    def tuned(self) -> dict[str, str]:
        """Tuned method name -> its base method."""
        return {f"{base}{TUNED_SUFFIX}": base for base in self.grids}

    @property
    def grid_methods(self) -> dict[str, Method]:
        return {name: m for grid in self.grids.values() for name, m in grid.items()}

    @property
    def budget(self) -> int:
        """Grid points per method (the same for every method)."""
        return len(next(iter(self.grids.values())))

    def selection_spec(self, base: str) -> dict[str, Any]:
        """What the selection job of ``base`` needs: its candidates, the rule and the row names."""
        return {
            "base": base,
            "tuned": f"{base}{TUNED_SUFFIX}",
            "paper": self.paper[base].name,
            "rule": {**self.select, "folding": "neg_jac_pct"},
            "candidates": {
                name: {"values": grid_values(m, self.keys[base]), "method": json.loads(m.to_json())}
                for name, m in self.grids[base].items()
            },
        }


def tuning_plan(config: Mapping[str, Any], methods: Mapping[str, Method]) -> TuningPlan | None:
    """The config's ``tuning`` block expanded over ``methods`` (from :func:`method_table`); None without one.

    Every tuned method must have the same number of grid points (the same budget)
    and the baseline must be among them; ConfigError otherwise.
    """
    tuning = config.get("tuning")  # an optional block
    if not tuning:
        return None
    chosen = tuning["methods"]
    bases = list(methods) if chosen == "all" else list(dict.fromkeys(chosen))
    unknown = [b for b in bases if b not in methods]
    if unknown:
        raise ConfigError(f"tuning.methods: unknown method(s) {', '.join(unknown)} (methods: {', '.join(methods)})")
    reserved = [b for b in bases if "@" in b]
    if reserved:
        raise ConfigError(f"tuning.methods: names with '@' are reserved for grid points: {', '.join(reserved)}")
    baseline = config["baseline"]
    if baseline not in bases:
        raise ConfigError(f"tuning.methods must include the baseline {baseline!r}: the verdict compares tuned methods with the tuned baseline")
    own = tuning["grids"]
    stray = sorted(set(own) - set(bases))
    if stray:
        raise ConfigError(f"tuning.grids names method(s) that are not tuned: {', '.join(stray)} (tuned: {', '.join(bases)})")
    grids, keys = {}, {}
    for base in bases:
        grid = own.get(base, tuning.get("grid"))  # tuning.grid is optional when grids covers every method
        if not grid:
            raise ConfigError(f"tuning: method {base} has no grid (give tuning.grid or tuning.grids.{base})")
        grids[base] = expand_grid(methods[base], grid)
        keys[base] = tuple(k for k in TUNABLE if k in grid)
    sizes = {base: len(grid) for base, grid in grids.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{b} {n}" for b, n in sizes.items())
        raise ConfigError(f"tuning grids differ in size ({listed} grid points): every method, the baseline included, "
                          f"needs the same budget")
    paper_settings = tuning["paper_settings"]
    paper = {}
    for base in bases:
        method = methods[base]
        if method.kind == "elastix":  # the paper has no elastix: its configured settings are its "paper" row
            paper[base] = method
            continue
        at_paper = _with_settings(method, f"{base}{PAPER_SUFFIX}", paper_settings)
        paper[base] = method if dict(at_paper.settings) == dict(method.settings) else at_paper
    metric = tuning["select"]["metric"]
    if metric != "dice_mean" and metric.removeprefix("dice_") not in config["labels"]:
        raise ConfigError(f"tuning.select.metric {metric!r} names no label class (labels: {', '.join(config['labels'])})")
    return TuningPlan(grids=grids, keys=keys, paper=paper, select=dict(tuning["select"]))

"""An experiment config expanded into what the workflow runs: patients, shards and methods.

Pure functions over the validated config dict (``workflow/schemas/config.schema.yaml``,
which fills in every default: nothing here falls back to a default of its own), so the
Snakefile and the tests share one expansion, and the checks (:func:`check_methods`,
:func:`encoder_specs`) that parse every method and encoder as its job will, before any job runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from featreg.data.acdc import SPLITS, patient_number, patient_order, select_patients
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError, InputError
from featreg.io import write_text_atomic
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


def shard_patients(patients: Sequence[str], shard_size: int, *, prefix: str = "s") -> dict[str, list[str]]:
    """Split patients into shards of ``shard_size`` consecutive ids in sorted order.

    Shard ``s000`` holds the first ``shard_size`` patients, ``s001`` the next, and so
    on (``prefix`` replaces the ``s``: the validation split's shards are ``v000``, ...).
    Appending patients with higher ids changes only the last shard and adds new
    ones, so a grown cohort reruns only those.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    ordered = sorted(patients, key=patient_order)
    return {f"{prefix}{i // shard_size:03d}": ordered[i : i + shard_size] for i in range(0, len(ordered), shard_size)}


# --- Splits --------------------------------------------------------------------------------

ACDC_PATIENTS = 150
"""Patients in ACDC; a synthetic cohort at least this large takes its roles from the ACDC ranges."""


def synthetic_role_number(seed: int, number: int) -> int:
    """The ACDC patient number whose split role synthetic patient ``number`` takes in a small cohort.

    ``1 + floor(150 * h)`` with ``h`` the first 8 bytes of SHA-256 of ``"<seed>:<number>"``
    read as a fraction of 2**64: a deterministic function of (seed, number) only, so
    adding patients never moves an existing one between train, val and test, and the
    roles keep ACDC's proportions (100 : 20 : 30) on average.
    """
    digest = hashlib.sha256(f"{seed}:{number}".encode()).digest()
    return 1 + (int.from_bytes(digest[:8], "big") * ACDC_PATIENTS >> 64)


def split_patients(
    cohort: Sequence[str],
    split: str | Sequence[int | str],
    *,
    synthetic_seed: int | None = None,
    roles: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Patients of a split among ``cohort`` (sorted for a named split, as given for a list).

    A manifest cohort (``roles``: its ``split`` column, patient -> train / val / test)
    selects by that column. ACDC and synthetic cohorts of at least 150 patients use the
    ACDC ranges (train 1–100, val 101–120, test 121–150). A synthetic cohort
    (``synthetic_seed`` given) smaller than that gives patient k the role of ACDC patient
    :func:`synthetic_role_number` (seed, k).
    """
    if isinstance(split, str) and split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(sorted(SPLITS))} or a list of patients")
    if roles is not None and isinstance(split, str) and split != "all":
        return sorted((p for p in cohort if roles.get(p) == split), key=patient_order)
    if isinstance(split, str) and split != "all" and synthetic_seed is not None and len(cohort) < ACDC_PATIENTS:
        wanted = SPLITS[split]
        chosen = [p for p in cohort if synthetic_role_number(synthetic_seed, patient_number(p)) in wanted]
        return sorted(chosen, key=patient_number)
    return select_patients(cohort, split)


def experiment_patients(
    config: Mapping[str, Any], cohort: Sequence[str], roles: Mapping[str, str | None] | None = None
) -> tuple[list[str], list[str]]:
    """(test patients, validation patients) of a config; validation is empty without a ``tuning`` block.

    ``roles`` is a manifest's ``split`` column (:func:`featreg.data.cohort.cohort_roles`).
    Raises ConfigError when a split selects nobody or when the two splits share a patient.
    """
    dataset = config["dataset"]
    seed = dataset["synthetic"]["seed"] if dataset["kind"] == "synthetic" else None
    if dataset["kind"] == "manifest":
        roles = roles or {}
        for key, split in (("dataset.split", dataset["split"]), ("tuning.split", config.get("tuning", {}).get("split"))):
            if isinstance(split, str) and split != "all" and not roles:
                raise ConfigError(f"{key} {split!r} needs the manifest's split column (train, val or test per row); "
                                  f"or give 'all' or a list of patient ids")
    test = split_patients(cohort, dataset["split"], synthetic_seed=seed, roles=roles)
    if not test:
        raise ConfigError(f"dataset.split {dataset['split']!r} selects no patient of the cohort ({len(cohort)} patients)")
    tuning = config.get("tuning")  # an optional block
    if not tuning:
        return test, []
    val = split_patients(cohort, tuning["split"], synthetic_seed=seed, roles=roles)
    if not val:
        raise ConfigError(f"tuning.split {tuning['split']!r} selects no patient of the cohort ({len(cohort)} patients)")
    shared = sorted(set(test) & set(val), key=patient_order)
    if shared:
        raise ConfigError(
            f"tuning.split and dataset.split overlap in {len(shared)} patient(s) ({', '.join(shared[:5])}"
            f"{', ...' if len(shared) > 5 else ''}): validation patients must never be test patients"
        )
    return test, val


# --- Tuning ----------------------------------------------------------------------------------

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


def value_label(value: Any) -> str:
    """A setting's value as text in names and labels: numbers ``:g`` (0.125, 1e-05), lists ``24x24``."""
    if isinstance(value, (list, tuple)):
        return "x".join(value_label(v) for v in value)
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


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


SELECTION_KEYS = ("base", "tuned", "paper", "rule", "selected", "values", "method", "candidates")
"""The entries of a selection record written by ``featreg select-setting``."""


def _read_json(path: Path, what: str) -> Any:
    """The JSON content of ``path``; InputError naming ``what`` the file should be when missing or not JSON."""
    if not path.is_file():
        raise InputError(f"{what} is missing", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not a {what}: not JSON ({exc})", path=path) from exc


def read_selection(path: str | Path) -> dict[str, Any]:
    """A selection record written by ``featreg select-setting``, checked for its entries."""
    path = Path(path)
    record = _read_json(path, "selection record")
    missing = [key for key in SELECTION_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise InputError(f"not a selection record: it lacks {', '.join(missing)}", path=path)
    return record


def write_method_file(method: Method, path: str | Path) -> Path:
    """Write ``method`` to ``path`` in its one canonical form (:meth:`Method.to_json`, sorted keys)."""
    return write_text_atomic(path, method.to_json())


def load_method_file(path: str | Path) -> Method:
    """The method of a method file (``results/<name>/methods/<method>.json``, :func:`write_method_file`)."""
    path = Path(path)
    entries = _read_json(path, "method file")
    fields = {f.name for f in dataclasses.fields(Method)}
    if not isinstance(entries, dict) or set(entries) != fields:
        raise InputError(f"not a method file: expected the entries {', '.join(sorted(fields))}", path=path)
    return Method(**entries)


def registrations_per_encoder(
    config: Mapping[str, Any], cohort: Sequence[str], roles: Mapping[str, str | None] | None = None
) -> dict[str | None, int]:
    """Registrations the workflow runs for ``config`` on ``cohort`` (ids before the split), per encoder
    (:func:`count_registrations` of the config's expansion)."""
    methods = method_table(config)
    test, val = experiment_patients(config, cohort, roles)
    return count_registrations(methods, tuning_plan(config, methods), test, val)


def count_registrations(
    methods: Mapping[str, Method], tuning: TuningPlan | None, test: Sequence[str], val: Sequence[str]
) -> dict[str | None, int]:
    """Registrations per encoder of an expanded config (key None: intensity-only methods).

    Test methods (and, with a tuning block, each tuned method's paper and tuned rows) run
    on the test patients, grid points on the validation patients.
    """
    on_test = list({**methods, **({m.name: m for m in tuning.paper.values()} if tuning else {})}.values())
    on_val: list[Method] = []
    if tuning:
        on_test += [methods[base] for base in tuning.tuned.values()]
        on_val = list(tuning.grid_methods.values())
    counts: dict[str | None, int] = {}
    for group, patients in ((on_test, test), (on_val, val)):
        for method in group:
            counts[method.encoder] = counts.get(method.encoder, 0) + len(patients)
    return counts

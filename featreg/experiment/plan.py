"""The experiment plan: one frozen object holding everything the workflow derives from a validated config.

The Snakefile builds it once (:meth:`ExperimentPlan.build`) and reads its
attributes; every derived table (methods per split, encoder and engine of each
method, shards) is computed here, in Python, and tested in ``tests/test_experiment.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from featreg.data.acdc import list_patients
from featreg.data.manifest import ManifestRow, is_manifest, manifest_roles, read_manifest
from featreg.errors import ConfigError
from featreg.experiment.methods import ONCE, Method, check_labels, check_methods, method_table
from featreg.experiment.splits import experiment_patients, shard_patients
from featreg.experiment.tuning import TuningPlan, tuning_plan
from featreg.registration.settings import RegistrationSettings


def cohort_of(dataset: Mapping[str, Any]) -> tuple[list[str], dict[str, ManifestRow] | None]:
    """Patient ids of the dataset before the split, and a manifest dataset's rows by patient (else None)."""
    if dataset["kind"] == "synthetic":
        return [f"patient{k:03d}" for k in range(1, dataset["synthetic"]["patients"] + 1)], None
    if dataset["kind"] == "manifest":
        if not is_manifest(dataset["root"]):
            raise ConfigError(f"dataset.root {dataset['root']!r}: kind manifest needs a .csv or .tsv file")
        rows = read_manifest(dataset["root"])
        return list(rows), rows
    return list_patients(dataset["root"]), None


@dataclass(frozen=True)
class ExperimentPlan:
    """What a config runs: its methods per split, its patients and shards (derived tables computed once).

    ``methods`` are the configured methods (explicit, encoder grid, α sweep);
    ``tuning`` their tuning protocol (None without a ``tuning`` block). Test methods
    run on the test shards (``s000``, ...), grid points on the validation shards
    (``v000``, ...); a tuned method ``<base>@tuned`` runs on test with the settings its
    selection job writes, so its settings are unknown when the plan is built.
    ``figure_patient`` is the test patient of the report's per-pair figures; ``manifest``
    a manifest dataset's rows by patient.
    """

    methods: Mapping[str, Method]
    tuning: TuningPlan | None
    patients: Sequence[str]
    val_patients: Sequence[str]
    shard_size: int
    figure_patient: str
    manifest: Mapping[str, ManifestRow] | None = None

    @classmethod
    def build(cls, config: Mapping[str, Any]) -> ExperimentPlan:
        """The plan of a schema-validated config; every method and encoder is parsed as its job will,
        so a typo is a ConfigError here, before any job runs."""
        methods = method_table(config)
        tuning = tuning_plan(config, methods)
        unchecked = cls(methods, tuning, (), (), config["compute"]["shard_size"], "")
        check_methods(config, unchecked.runnable)  # parses the encoders too
        check_labels(config)
        cohort, manifest = cohort_of(config["dataset"])
        roles = manifest_roles(manifest) if manifest else None
        patients, val_patients = experiment_patients(config, cohort, roles)
        figure_patient = config["figures"]["patient"] or patients[0]
        if figure_patient not in patients:
            raise ConfigError(f"figures.patient {figure_patient!r} is not among the test patients "
                              f"({', '.join(patients[:5])}{', ...' if len(patients) > 5 else ''})")
        return cls(methods, tuning, patients, val_patients, config["compute"]["shard_size"], figure_patient, manifest)

    @cached_property
    def tuned(self) -> dict[str, str]:
        """Tuned method name -> its base method."""
        return self.tuning.tuned if self.tuning else {}

    @cached_property
    def grid_methods(self) -> dict[str, Method]:
        """The tuning grid points (validation split)."""
        return self.tuning.grid_methods if self.tuning else {}

    @cached_property
    def test_methods(self) -> dict[str, Method]:
        """Methods on the test split whose settings are known now: the configured ones and each tuned
        method's paper row (when its settings differ from its own)."""
        paper = {m.name: m for m in self.tuning.paper.values()} if self.tuning else {}
        return dict(self.methods) | paper

    @cached_property
    def runnable(self) -> dict[str, Method]:
        """Every method whose settings are known when the DAG is built (tuned ones read theirs at run time)."""
        return self.test_methods | self.grid_methods

    @cached_property
    def reported(self) -> list[str]:
        """The method rows of the test split's metrics table, ``initial`` first."""
        return ["initial", *self.test_methods, *self.tuned]

    def base_method(self, name: str) -> Method:
        """The method ``name`` runs as, or for a tuned method the method it was tuned from."""
        return self.runnable[name] if name in self.runnable else self.methods[self.tuned[name]]

    @cached_property
    def encoder_of(self) -> dict[str, str | None]:
        """Every method (tuned ones included) -> its encoder (None: intensity only)."""
        return {name: self.base_method(name).encoder for name in (*self.runnable, *self.tuned)}

    @cached_property
    def kind_of(self) -> dict[str, str]:
        """Every method (tuned ones included) -> its engine (``ffd`` or ``elastix``)."""
        return {name: self.base_method(name).kind for name in (*self.runnable, *self.tuned)}

    @cached_property
    def shards(self) -> dict[str, list[str]]:
        """Test shards: ``s000`` ... -> their patients."""
        return shard_patients(self.patients, self.shard_size)

    @cached_property
    def val_shards(self) -> dict[str, list[str]]:
        """Validation shards: ``v000`` ... -> their patients."""
        return shard_patients(self.val_patients, self.shard_size, prefix="v")

    @cached_property
    def all_shards(self) -> dict[str, list[str]]:
        """Test and validation shards together (their names differ: ``s`` and ``v``)."""
        return self.shards | self.val_shards

    def methods_of_kind(self, kind: str) -> list[str]:
        """The methods (tuned ones included) that run on engine ``kind``, which picks their register rule."""
        return [name for name, k in self.kind_of.items() if k == kind]

    def encodes_once(self, encoder: str) -> bool:
        """Whether a method of ``encoder`` encodes the moving image once (its features job caches them too)."""
        return any(self.base_method(name).encode == ONCE for name, enc in self.encoder_of.items() if enc == encoder)

    def encoder_passes(self) -> dict[str, dict[str, int]]:
        """Projected encoder passes per encoder and mode, for the dry run's log.

        ``each_iteration``: a forward and backward pass per registration and iteration (the
        paper's way); ``once``: one forward pass per moving image of the patients its
        once-methods run on, shared by those methods. Each pair's fixed image is encoded
        once in either mode and is not counted.
        """
        each: dict[str, int] = {}
        once: dict[str, set[str]] = {}
        for method, patients in self._registrations():
            if method.encode == ONCE:
                once.setdefault(method.encoder, set()).update(patients)
            elif method.encoder is not None:
                iterations = RegistrationSettings.from_dict(method.registration_settings()).iterations  # its default too
                each[method.encoder] = each.get(method.encoder, 0) + len(patients) * iterations
        return {encoder: {"each_iteration": each.get(encoder, 0), "once": len(once.get(encoder, ()))}
                for encoder in dict.fromkeys([*each, *once])}

    def _registrations(self) -> list[tuple[Method, Sequence[str]]]:
        """Every registration group: (method, the patients it runs on); a tuned method as its base."""
        test = [*self.test_methods.values(), *(self.methods[base] for base in self.tuned.values())]
        return [(m, self.patients) for m in test] + [(m, self.val_patients) for m in self.grid_methods.values()]

    def registrations(self) -> dict[str | None, int]:
        """Registrations per encoder (key None: intensity-only methods)."""
        counts: dict[str | None, int] = {}
        for method, patients in self._registrations():
            counts[method.encoder] = counts.get(method.encoder, 0) + len(patients)
        return counts

    def summary(self) -> str:
        """One line for the dry run: registrations, methods and patients, and the tuning budget."""
        line = (f"{sum(self.registrations().values())} registrations ({len(self.test_methods) + len(self.tuned)} "
                f"methods x {len(self.patients)} test patients")
        if self.tuning:
            line += (f"; tuning: {len(self.tuned)} methods x {self.tuning.budget} grid points x "
                     f"{len(self.val_patients)} validation patients = {len(self.grid_methods) * len(self.val_patients)}")
        line += ")"
        passes = self.encoder_passes()
        if passes:
            line += "; projected encoder passes: " + ", ".join(
                f"{encoder} {n['each_iteration']} forward+backward (each_iteration), {n['once']} forward (once)"
                for encoder, n in passes.items())
        return line


def registrations_per_encoder(
    config: Mapping[str, Any], cohort: Sequence[str], roles: Mapping[str, str | None] | None = None
) -> dict[str | None, int]:
    """Registrations ``config`` would run on ``cohort`` (ids before the split), per encoder: a config's
    cost on a cohort other than its dataset's (``benchmarks/``)."""
    methods = method_table(config)
    test, val = experiment_patients(config, cohort, roles)
    return ExperimentPlan(methods, tuning_plan(config, methods), test, val, shard_size=1, figure_patient="").registrations()


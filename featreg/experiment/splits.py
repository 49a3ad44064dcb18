"""Patients of a config: the split roles (train, val, test) and the shards jobs take.

Roles are deterministic functions of the cohort, so adding patients never moves an
existing one between splits or shards (docs/references.md, "ACDC").
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from featreg.data.acdc import SPLITS, patient_number, patient_order, select_patients
from featreg.errors import ConfigError

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


"""Resuming and failure isolation, shared by the jobs: fingerprints, pending pairs, failed pairs, status manifests."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from featreg.data.pairs import expand_pairs, pair_failure, pair_name, pair_patient
from featreg.errors import FeatregError
from featreg.experiment.methods import Method
from featreg.io import write_json_atomic
from featreg.registration.io import write_failed_result
from featreg.registration.run_record import is_current

log = logging.getLogger(__name__)

Statuses = dict[str, dict[str, Any]]
"""Pair (or patient) name -> ``{"status": "ok" | "failed", "reason": ...}``: what a job manifest records."""


def ok(resumed: bool = False) -> dict[str, Any]:
    """The status of a pair or patient done now, or found done (``resumed``)."""
    return {"status": "ok", "reason": ""} | ({"resumed": True} if resumed else {})


def fingerprint(method: Method, encoder_identity: dict[str, Any] | None) -> str:
    """A hash of everything that determines a method's result for a pair."""
    text = method.to_json() + json.dumps(encoder_identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pair_fingerprint(method_fingerprint: str, pair_dir: str | Path) -> str | None:
    """The method's fingerprint combined with the pair's ``pair.json`` (None when unreadable).

    ``pair.json`` holds the pair's source files and preprocessing options, so a
    re-preprocessed pair invalidates its results while an unchanged one keeps them.
    """
    try:
        text = (Path(pair_dir) / "pair.json").read_bytes()
    except OSError:
        return None
    return hashlib.sha256(method_fingerprint.encode() + text).hexdigest()[:16]


def unreadable_reason(pair_dir: Path, exc: FeatregError) -> str:
    """Why a pair could not be read: its preprocessing failure when recorded, else the read error."""
    failure = pair_failure(pair_dir)
    return f"preprocessing failed: {failure}" if failure is not None else str(exc)


def pending_pairs(pair_dirs: Sequence[str | Path], out_dir: Path, expected: str,
                  statuses: Statuses) -> list[tuple[Path, str | None]]:
    """The pairs (every slice pair of the patients' folders) without a current result, with their
    fingerprint; finished ones go into ``statuses``."""
    pending: list[tuple[Path, str | None]] = []
    for pair_dir in expand_pairs(pair_dirs):
        key = pair_fingerprint(expected, pair_dir)
        if is_current(out_dir / pair_name(pair_dir), key):
            statuses[pair_name(pair_dir)] = ok(resumed=True)
        else:
            pending.append((pair_dir, key))
    return pending


def fail_pair(out_dir: Path, method: str, statuses: Statuses, progress: tqdm, pair_dir: Path, reason: str,
              key: str | None) -> None:
    """Record a pair that has no result: its ``run.json`` (status failed) and its manifest entry."""
    name = pair_name(pair_dir)
    log.error("%s: %s", name, reason)
    write_failed_result(out_dir / name, patient=pair_patient(pair_dir), method=method, reason=reason, fingerprint=key)
    statuses[name] = {"status": "failed", "reason": reason}
    progress.update()


def write_register_manifest(method: str, expected: str, statuses: Mapping[str, Mapping[str, Any]],
                            manifest: str | Path) -> Path:
    """The register job's manifest: the method, its fingerprint and each pair's status; failures logged."""
    failed = sorted(p for p, s in statuses.items() if s["status"] != "ok")
    if failed:
        log.warning("method %s: %d failed pair(s): %s", method, len(failed), ", ".join(failed))
    return write_json_atomic(manifest, {"method": method, "fingerprint": expected, "patients": dict(statuses)})

"""Cost beside accuracy: the seconds each registered pair took, read from its ``run.json``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from featreg.data.pairs import patient_pair_dirs
from featreg.errors import InputError
from featreg.registration.run_record import RUN_FILE, read_run, run_number

logger = logging.getLogger(__name__)

SECONDS_COLUMNS = ("method", "patient", "pair", "status", "seconds", "device")

SECONDS_DEFINITION = (
    "seconds per pair: run.json 'seconds', the wall time of the pair's batch from moving the images to the "
    "device to the final warp, divided by the pairs in the batch (elastix: the pair's registration and its "
    "deformation field), plus 'encode_seconds', the features job's time encoding the pair's cached images "
    "(the fixed one; the moving one too for a method that encodes once); job start-up, model loading and "
    "file writing are not counted"
)
"""What a seconds-per-pair figure measures, for captions."""


def read_seconds(results_dir: str | Path) -> pd.DataFrame:
    """Every ``run.json`` of a registration results folder, one row per pair (:data:`SECONDS_COLUMNS`).

    Pairs are ``<method>/<patient>/run.json``, or ``<method>/<patient>/slice<NN>/run.json``
    when a patient has one pair per slice. A run.json that cannot be read is skipped with
    a warning; a missing "seconds" or "device" is NaN or "" (a missing "encode_seconds" counts 0).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise InputError("registration results folder is missing", path=results_dir)
    rows = []
    for method_dir in sorted(d for d in results_dir.iterdir() if d.is_dir()):
        for patient_dir in sorted(d for d in method_dir.iterdir() if d.is_dir()):
            for pair_dir in patient_pair_dirs(patient_dir):
                if not (pair_dir / RUN_FILE).is_file():
                    continue
                try:
                    run = read_run(pair_dir)
                except InputError as exc:
                    logger.warning("seconds of %s unknown: %s", pair_dir.relative_to(results_dir).as_posix(), exc)
                    continue
                rows.append({"method": method_dir.name, "patient": patient_dir.name,
                             "pair": pair_dir.relative_to(method_dir).as_posix(), "status": run["status"],
                             "seconds": run_number(run, "seconds") + np.nan_to_num(run_number(run, "encode_seconds")),
                             "device": str(run.get("device", ""))})
    return pd.DataFrame(rows, columns=list(SECONDS_COLUMNS))


def pair_seconds(seconds: pd.DataFrame, metrics_df: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`read_seconds` that a report counts: the registered (method, patient)
    rows of ``metrics_df`` whose run finished ("ok"); a failed run's time is left out."""
    keys = metrics_df.loc[metrics_df["variant"] != "initial", ["method", "patient"]].drop_duplicates()
    kept = seconds.merge(keys, on=["method", "patient"])
    return kept[kept["status"] == "ok"].reset_index(drop=True)

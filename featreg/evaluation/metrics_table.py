"""The metrics table (a shard's ``<method>/<shard>.csv``, the run's ``metrics.csv``): its columns, writer and reader.

One row per registered pair: the method's descriptor columns, then the pair's row
(:func:`row_columns`). Every other module builds, writes and reads it through here
(docs/design.md, "The metrics table").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featreg.data import LABELS
from featreg.errors import InputError
from featreg.evaluation.metrics import metric_columns
from featreg.io import atomic_path

DESCRIPTOR_COLUMNS = ("method", "encoder", "distance", "variant", "alpha")
"""The method's columns, first in every row."""

RUN_COLUMNS: tuple[str, ...] = ("seconds", "encode_seconds", "peak_memory_mb", "iterations")
"""The columns a row takes from the result's run.json: the optimisation's seconds (encoder passes inside the
loop included), the seconds encoding the pair's cached images took (NaN without an encoder), peak memory and
iterations."""

MEASURED_COLUMNS = ("seconds", "encode_seconds", "peak_memory_mb")
"""The run columns that measure the machine, not the result: they differ between any two runs of the same config."""

TEXT_COLUMNS = ("method", "encoder", "distance", "variant", "patient", "status", "reason", "hd95_empty")

INITIAL = {"method": "initial", "encoder": "", "distance": "", "variant": "initial", "alpha": np.nan}
"""The descriptor columns of the rows before registration."""


def row_columns(labels: Mapping[int, str] = LABELS) -> tuple[str, ...]:
    """Columns of one pair's row for label classes ``labels``, in the order of metrics.csv after the
    descriptor columns; ``slice`` is the pair's slice index in the patient's volume (``slice_index`` of its pair.json)."""
    return ("patient", "slice", "status", "reason", *metric_columns(labels), *RUN_COLUMNS)


ROW_COLUMNS: tuple[str, ...] = row_columns()
"""The row columns with ACDC's classes."""


def descriptors(name: str, encoder: str | None, distance: str | None, variant: str, alpha: float) -> dict[str, Any]:
    """A method's descriptor columns (an empty cell for no encoder or distance)."""
    return {"method": name, "encoder": encoder or "", "distance": distance or "", "variant": variant, "alpha": alpha}


def class_names(df: pd.DataFrame) -> list[str]:
    """The label classes of a metrics table (its ``dice_<class>`` columns), in column order."""
    return [c.removeprefix("dice_") for c in df.columns if c.startswith("dice_") and c != "dice_mean"]


def numeric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric columns of a metrics table that summary.csv describes (docs/design.md, "The metrics table"),
    for whatever label classes it holds."""
    labels = dict(enumerate(class_names(df), start=1))
    return [c for c in (*metric_columns(labels), *RUN_COLUMNS) if c != "hd95_empty" and c in df.columns]


def write_metrics(rows: Sequence[Mapping[str, Any]] | pd.DataFrame, path: str | Path) -> Path:
    """Write rows (descriptors + row columns) as a metrics table, atomically; ``slice`` as a nullable integer."""
    table = pd.DataFrame(rows).astype({"slice": "Int64"})
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def read_shard_table(path: str | Path) -> pd.DataFrame:
    """A shard's metrics table as written, without normalisation (what the collect job concatenates)."""
    return pd.read_csv(path, keep_default_na=True)


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Read a metrics table; empty text cells become "" and the required columns are checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError("metrics table is missing", path=path)
    df = pd.read_csv(path)
    missing = [c for c in (*DESCRIPTOR_COLUMNS, "patient", "dice_mean") if c not in df.columns]
    if missing:
        raise InputError(f"metrics table lacks columns: {', '.join(missing)}", path=path)
    return normalise_metrics(df)


def patient_means(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, patient): each patient's mean over its slices, the unit of every statistic.

    Slices of one patient are not independent samples (a paired test over them would be
    pseudo-replication), so tests, summaries and the verdict run on these rows. A patient
    with one pair per method is returned as it is. Otherwise its row holds the mean of
    each numeric column over its slices (NaN values excluded), ``n_slices``, and status
    ``failed`` with NaN metrics when any of its slices failed (the reasons joined).
    """
    if "slice" not in df.columns or not df.duplicated(["method", "patient"]).any():
        return df.assign(n_slices=1) if "n_slices" not in df.columns else df
    keys = ["method", "patient"]
    numeric = numeric_columns(df)
    grouped = df.groupby(keys, sort=False)
    rows = grouped[[c for c in DESCRIPTOR_COLUMNS if c != "method"]].first()
    rows[numeric] = grouped[numeric].mean()
    rows["n_slices"] = grouped.size()
    failed = grouped["status"].agg(lambda s: s.eq("failed").any())
    rows["status"] = np.where(failed, "failed", "ok")
    rows["reason"] = grouped["reason"].agg(lambda s: "; ".join(dict.fromkeys(r for r in s if r)))
    rows.loc[failed, [c for c in numeric if c not in RUN_COLUMNS]] = np.nan
    if "hd95_empty" in df.columns:
        rows["hd95_empty"] = grouped["hd95_empty"].agg(
            lambda s: ";".join(dict.fromkeys(c for cell in s for c in str(cell).split(";") if c)))
    return rows.reset_index()[[c for c in df.columns if c != "slice"] + ["n_slices"]]


def normalise_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as str with "" for missing, metric columns as float."""
    df = df.copy()
    for col in TEXT_COLUMNS:
        if col in df.columns:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    for col in (*numeric_columns(df), "alpha"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


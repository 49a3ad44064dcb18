"""The collect job: every shard's metrics table into the run's ``metrics.csv``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from featreg.errors import FeatregError
from featreg.evaluation.metrics_table import read_shard_table, write_metrics


def collect_metrics(shard_csvs: Sequence[str | Path], out_csv: str | Path) -> Path:
    """Concatenate shard metric tables into one ``metrics.csv``, sorted by method, patient and slice."""
    if not shard_csvs:
        raise FeatregError("no metric tables to collect")
    table = pd.concat([read_shard_table(p) for p in shard_csvs], ignore_index=True)
    return write_metrics(table.astype({"slice": "Int64"}).sort_values(["method", "patient", "slice"], kind="stable"),
                         out_csv)

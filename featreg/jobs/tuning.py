"""The tuning selection job: apply the selection rule to the validation metrics of a method's grid points."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.metrics_table import patient_means, read_metrics
from featreg.evaluation.statistics import TIE_BREAK, eligible_settings, select_setting, summarize
from featreg.experiment.method_file import write_method_file
from featreg.experiment.methods import Method
from featreg.experiment.selection_record import write_selection_record


def select_tuned(spec: Mapping[str, Any], metrics: Any) -> dict[str, Any]:
    """Apply the selection rule of ``spec`` (:meth:`TuningPlan.selection_spec`) to validation metrics.

    ``metrics`` is the per-pair metrics table (a DataFrame) of the candidates.
    Returns the selection record: the rule, each candidate's means and
    eligibility (a finite metric and folding value on every validation pair, mean
    folding within the limit), the selected grid point and the tuned method (its settings,
    renamed ``<base>@tuned``). Raises InputError when a candidate has no rows or
    the constraint excludes every candidate.
    """
    rule = {**spec["rule"], "ties": TIE_BREAK}
    metric, folding = rule["metric"], rule["folding"]
    candidates = list(spec["candidates"])
    rows = metrics[metrics["method"].isin(candidates)]
    missing = [c for c in candidates if c not in set(rows["method"])]
    if missing:
        raise InputError(f"validation metrics lack grid point(s) of {spec['base']}: {', '.join(missing)}")
    choice = select_setting(rows, max_neg_jac_pct=rule["max_neg_jac_pct"], methods=candidates, dice=metric,
                            folding=folding)
    table = summarize(rows, [metric, folding, "sdlogj"]).set_index("method")
    eligible = eligible_settings(rows, max_neg_jac_pct=rule["max_neg_jac_pct"], dice=metric, folding=folding)
    listed = []
    for name in candidates:
        row = table.loc[name]
        listed.append({
            "method": name,
            "values": spec["candidates"][name]["values"],
            "n": int(row[f"n_{metric}"]),
            f"mean_{metric}": float(row[f"mean_{metric}"]),
            f"mean_{folding}": float(row[f"mean_{folding}"]),
            "mean_sdlogj": float(row["mean_sdlogj"]),
            "eligible": bool(eligible[name]),
        })
    chosen = Method(**spec["candidates"][choice]["method"])
    tuned = replace(chosen, name=spec["tuned"])
    return {
        "base": spec["base"],
        "tuned": spec["tuned"],
        "paper": spec["paper"],
        "rule": rule,
        "selected": choice,
        "values": spec["candidates"][choice]["values"],
        "method": json.loads(tuned.to_json()),
        "candidates": listed,
    }


def write_selection(
    spec: Mapping[str, Any], metric_tables: Sequence[str | Path], out: str | Path, method_file: str | Path
) -> Path:
    """The selection job: :func:`select_tuned` on the candidates' validation metric tables.

    Writes the tuned method to ``method_file`` (where every method's file lives) and then
    the selection record to ``out``.
    """
    metrics = patient_means(pd.concat([read_metrics(path) for path in metric_tables], ignore_index=True))
    record = select_tuned(spec, metrics)
    write_method_file(Method(**record["method"]), method_file)
    return write_selection_record(record, out)


"""The fair-comparison protocol in the report: grids, selections, validation Pareto fronts.

Inputs are the selection records written by ``featreg select-setting`` (one per
tuned method, see ``featreg.jobs.tuning.select_tuned``), the validation metrics
table (grid points × validation patients) and the test metrics table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.statistics import eligible_settings, pareto_mask, summarize
from featreg.experiment.selection_record import read_selection
from featreg.experiment.methods import value_label
from featreg.evaluation.metrics_table import normalise_metrics

def read_selections(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The selection records, checked for their entries, in the order given."""
    return [read_selection(path) for path in paths]


def settings_labels(selections: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Test-split method -> which settings it ran with: "paper settings" or "tuned (λ = ..., ...)"."""
    labels = {}
    for record in selections:
        labels[record["paper"]] = "paper settings"
        labels[record["tuned"]] = "tuned: " + values_label(record["values"])
    return labels


def values_label(values: Mapping[str, Any]) -> str:
    """``lam 60, lr 0.0005`` for a grid point's values."""
    return ", ".join(f"{k} {value_label(v)}" for k, v in values.items())


def tuning_frame(validation_df: pd.DataFrame, selections: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per grid point: base method, its values, n, means, eligibility, selection, Pareto fronts.

    ``eligible`` is the selection rule's (``featreg.evaluation.statistics.eligible_settings``):
    finite values on every validation pair and mean folding within the limit.

    ``front_sdlogj`` / ``front_neg_jac`` mark the points on the Pareto front of
    their own method's grid (maximise mean Dice, minimise mean sdlogJ / mean %J≤0).
    """
    df = normalise_metrics(validation_df)
    rows = []
    for record in selections:
        names = [c["method"] for c in record["candidates"]]
        missing = [n for n in names if n not in set(df["method"])]
        if missing:
            raise InputError(f"validation metrics lack grid point(s) of {record['base']}: {', '.join(missing)}")
        grid = df[df["method"].isin(names)]
        stats = summarize(grid, ["dice_mean", "sdlogj", "neg_jac_pct"]).set_index("method")
        rule = record["rule"]
        eligible = eligible_settings(grid, max_neg_jac_pct=rule["max_neg_jac_pct"], dice=rule["metric"],
                                     folding=rule["folding"])
        for candidate in record["candidates"]:
            name = candidate["method"]
            s = stats.loc[name]
            rows.append({
                "base": record["base"], "method": name, **{k: value_label(v) for k, v in candidate["values"].items()},
                "n": int(s["n_dice_mean"]), "mean_dice_mean": s["mean_dice_mean"], "mean_sdlogj": s["mean_sdlogj"],
                "mean_neg_jac_pct": s["mean_neg_jac_pct"], "eligible": bool(eligible[name]),
                "selected": name == record["selected"],
            })
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise InputError("no selection records: nothing was tuned")
    for x, column in (("mean_sdlogj", "front_sdlogj"), ("mean_neg_jac_pct", "front_neg_jac")):
        frame[column] = False
        for _, group in frame.groupby("base", sort=False):
            mask = pareto_mask(group[["mean_dice_mean", x]].to_numpy(float), [True, False])
            frame.loc[group.index[mask], column] = True
    return frame


def pareto_metrics(validation_df: pd.DataFrame, selections: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, str | None]:
    """The validation rows of the grid points with ``base`` and ``curve`` columns, and the column to order by.

    A curve is one method across its regulariser weights (λ; elastix: the bending
    weight; the other grid values fixed, named in ``curve``); without one in any grid,
    across its points in x order (None).
    """
    df = normalise_metrics(validation_df)
    lam: dict[str, float] = {}
    curve: dict[str, str] = {}
    base: dict[str, str] = {}
    for record in selections:
        for candidate in record["candidates"]:
            values = dict(candidate["values"])
            name = candidate["method"]
            base[name] = record["base"]
            lam[name] = float(values.pop("lam", values.pop("bending_weight", np.nan)))
            curve[name] = values_label(values)
    df = df[df["method"].isin(base)]
    df = df.assign(base=df["method"].map(base), curve=df["method"].map(curve), lam=df["method"].map(lam))
    return df, ("lam" if df["lam"].notna().any() else None)


def grid_frame(selections: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per tuned method: its grid (values per key), its number of points and the selected values.

    ``edge`` names the keys whose selected value is the smallest or largest of
    its grid (a key with two or more values): the best setting may lie beyond.
    """
    rows = []
    for record in selections:
        values = grid_axes(record)
        edges = [f"{key} = {value_label(record['values'][key])} is the "
                 f"{'smallest' if record['values'][key] == axis[0] else 'largest'} of {_axis_label(axis)}"
                 for key, axis in values.items()
                 if len(axis) > 1 and record["values"][key] in (axis[0], axis[-1])]
        rows.append({
            "method": record["base"],
            "grid": " × ".join(f"{key} {_axis_label(axis)}" for key, axis in values.items()),
            "points": len(record["candidates"]),
            "selected": values_label(record["values"]),
            "edge": "; ".join(edges) or "none",
        })
    return pd.DataFrame(rows, columns=["method", "grid", "points", "selected", "edge"])


def grid_axes(record: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The values each grid key of a selection record takes, ascending (lattices by their sizes)."""
    axes = {}
    for key in record["values"]:
        distinct = sorted({_hashable(c["values"][key]) for c in record["candidates"]})
        axes[key] = [list(v) if isinstance(v, tuple) else v for v in distinct]
    return axes


def _axis_label(axis: Sequence[Any]) -> str:
    return "{" + ", ".join(value_label(v) for v in axis) + "}"


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def edge_warnings(grids: pd.DataFrame) -> list[str]:
    """One sentence per tuned method whose selected point lies on an edge of its grid."""
    return [f"{row.method}: the selected {row.edge}, so the grid was too narrow to know whether a value beyond "
            f"it is better; widen the grid." for row in grids.itertuples() if row.edge != "none"]

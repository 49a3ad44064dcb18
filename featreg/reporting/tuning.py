"""The fair-comparison protocol in the report: selections, validation Pareto fronts, the verdict.

Inputs are the selection records written by ``featreg select-setting`` (one per
tuned method, see ``featreg.experiment.select_tuned``), the validation metrics
table (grid points × validation patients) and the test metrics table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.statistics import compare_to_baseline, eligible_settings, pareto_mask, summarize
from featreg.experiment import read_selection, value_label
from featreg.reporting.tables import normalise_metrics

VERDICT_METRICS = ("dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct")


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


def verdict_frame(test_df: pd.DataFrame, selections: Sequence[Mapping[str, Any]], baseline: str, *,
                  n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each tuned method against the tuned baseline on the test split, per metric.

    Paired two-sided Wilcoxon, Holm across the tuned methods per metric, mean
    paired difference (method − baseline) with a percentile-bootstrap 95 % CI
    (``featreg.evaluation.statistics.compare_to_baseline``).
    """
    tuned = {r["base"]: r["tuned"] for r in selections}
    if baseline not in tuned:
        raise InputError(f"the baseline {baseline!r} has no selection record: it must be tuned too "
                         f"(tuned: {', '.join(tuned) or 'none'})")
    df = normalise_metrics(test_df)
    others = [name for base, name in tuned.items() if base != baseline]
    absent = [name for name in [tuned[baseline], *others] if name not in set(df["method"])]
    if absent:
        raise InputError(f"test metrics lack tuned method(s): {', '.join(absent)}")
    frames = [
        compare_to_baseline(df, metric, tuned[baseline], methods=others, n_resamples=n_resamples, seed=seed)
        .assign(metric=metric)
        for metric in VERDICT_METRICS
    ]
    return pd.concat(frames, ignore_index=True)

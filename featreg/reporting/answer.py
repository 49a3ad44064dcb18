"""The report's answer block: per comparison family its sentence, best method, counts and forest plot,
then mean Dice against seconds per pair."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from featreg.evaluation.statistics import summarize
from featreg.reporting import figures
from featreg.reporting.comparisons import (
    SIGNIFICANCE,
    VERDICT_METRICS,
    Family,
    best_line,
    count_methods,
    family_answer,
    forest_rows,
)
from featreg.reporting.cost import SECONDS_DEFINITION
from featreg.reporting.html import Section
from featreg.reporting.tables import method_descriptors

logger = logging.getLogger(__name__)


def answer_sections(df: pd.DataFrame, tests: pd.DataFrame, families: Sequence[Family],
                     seconds: pd.DataFrame | None, out_dir: Path, n_resamples: int,
                     written: dict[str, Path]) -> list[Section]:
    """The answer block: per family its sentence, best method, counts and forest plot; then the cost figure."""
    variants = method_descriptors(df).set_index("method")["variant"].to_dict()
    parts = []
    for family in families:
        answer = family_answer(tests, family, variants)
        rows = tests[tests["family"] == family.key]
        panels = [(f"Δ {name} ({unit}), method − {family.against}", forest_rows(rows, metric))
                  for metric, (name, unit, _, _) in VERDICT_METRICS.items()]
        path = figures.forest_plot(panels, out_dir / f"forest_{family.key}.png")
        written[path.name] = path
        n = int(answer.best["n_pairs"])
        interval = "unadjusted percentile-bootstrap 95 % CI" if n_resamples else "no CI computed"
        parts.append(Section(f"{family.title.capitalize()}: {count_methods(len(family.pairs))} against {family.against}", "block", [
            Section("", "text", f"{answer.sentence}{_cost_ratio(family, seconds)}\n\n{best_line(answer, n_resamples)}",
                    css_class="sentence"),
            Section("", "table", answer.counts,
                    f"Methods per metric (of {count_methods(len(family.pairs))}; n = {n} pairs): better / worse = Holm-adjusted "
                    f"paired Wilcoxon p < {SIGNIFICANCE} in the better / worse direction, Holm within this family "
                    f"and metric; Dice higher is better, HD95 (mm) and %J≤0 lower."),
            Section("", "figure", path,
                    f"Forest plots, one per metric: Δ = mean paired difference (method − reference) over n = {n} "
                    f"pairs, bar: its {interval} (not corrected for multiplicity); filled: Holm-adjusted p < "
                    f"{SIGNIFICANCE} (green better, red worse), open: not significant; rows sorted by Δ, best at the "
                    f"top; dashed line: Δ = 0, the reference.", css_class="wide"),
        ], css_class="family"))
    if seconds is not None and not seconds["seconds"].gt(0).any():
        logger.info("cost figure skipped: no run.json of the metrics table's rows records positive seconds")
    elif seconds is not None:
        means = summarize(df[df["variant"] != "initial"], ["dice_mean"])
        cost = summarize(seconds, ["seconds"]).merge(means, on="method")
        points = cost.rename(columns={"mean_seconds": "seconds", "mean_dice_mean": "dice"})
        path = figures.cost_plot(points, out_dir / "cost.png")
        written[path.name] = path
        device_names = ", ".join(sorted(set(seconds["device"])))
        parts.append(Section("Accuracy against cost", "figure", path,
                             f"Per method: mean Dice (unitless, over the {df['patient'].nunique()} patients with a "
                             f"finite value) against mean seconds per pair (log scale; {SECONDS_DEFINITION}; mean "
                             f"over the method's pairs with a finished run), device: {device_names}; ringed and joined: "
                             f"the Pareto front (no other method has both a higher Dice and fewer seconds)."))
    return parts


def _cost_ratio(family: Family, seconds: pd.DataFrame | None) -> str:
    """For the encode family: the median over its twins of once's mean seconds per pair over every iteration's."""
    if family.key != "encode" or seconds is None:
        return ""
    means = seconds.groupby("method")["seconds"].mean()
    ratios = [means[m] / means[r] for m, r in family.pairs if m in means and r in means and means[r] > 0]
    if not ratios:
        return ""
    return (f" Encoding once costs {np.median(ratios):.2g}× the seconds per pair of encoding every iteration "
            f"(median over the {len(ratios)} method pairs, range {min(ratios):.2g}–{max(ratios):.2g}×; encoding "
            f"the cached images included).")

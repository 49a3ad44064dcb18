"""Like-for-like comparisons: which row is tested against which, in which Holm family, and the plain verdict.

A method is only ever tested against a reference run at the same kind of settings,
so that a gain from tuning alone is never read as a gain of the method:

- "paper settings": each method at the paper's fixed settings against the baseline at them;
- "configured settings": each method at the config's settings against the baseline at them
  (a family of its own only when a tuning run also has distinct ``<method>@paper`` rows;
  without a tuning run it is the only family);
- "tuned": each ``<method>@tuned`` against ``<baseline>@tuned``;
- "tuning": the effect of tuning itself, ``<method>@tuned`` against ``<method>``.

Each family is Holm-corrected on its own, per metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.statistics import COMPARISON_COLUMNS, compare_pairs
from featreg.reporting.tables import FAMILY_TITLES, method_descriptors
from featreg.evaluation.metrics_table import normalise_metrics

STATISTICS_METRICS = ("dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct")
"""Metrics every family is tested on (statistics.csv)."""

SIGNIFICANCE = 0.05
"""A difference counts when its Holm-corrected Wilcoxon p is below this."""

VERDICT_METRICS = {
    # column: (label with the unit of the difference, decimals, sign of a better difference)
    "dice_mean": ("mean Dice", 3, 1),
    "hd95_mean": ("HD95 (Δ in mm)", 2, -1),
    "neg_jac_pct": ("%J≤0 (Δ in percentage points)", 3, -1),
}
"""The metrics the verdict sentences speak of."""

SETTINGS_PHRASES = {
    "paper": "At the paper's settings",
    "configured": "At the configured settings",
    "tuned": "At the tuned settings (each chosen on the validation split)",
}


@dataclass(frozen=True)
class Family:
    """One Holm family: ``pairs`` of (method, reference) tested on the same question."""

    key: str
    pairs: tuple[tuple[str, str], ...]

    @property
    def title(self) -> str:
        """How Table 1 and the report name the family."""
        return FAMILY_TITLES[self.key]

    @property
    def reference(self) -> str | None:
        """The one reference of a family that has one (None for the tuning family)."""
        return None if self.key == "tuning" else self.pairs[0][1]


def comparison_families(metrics_df: pd.DataFrame, baseline: str,
                        selections: Sequence[Mapping[str, Any]] = ()) -> list[Family]:
    """The families of a test metrics table (see the module docstring); empty families are left out.

    ``selections`` are a tuning run's selection records (``base``, ``tuned`` and
    ``paper`` name the rows); without them every registered method is compared
    with ``baseline`` in one "configured settings" family.
    """
    df = normalise_metrics(metrics_df)
    desc = method_descriptors(df)
    registered = [m for m, v in zip(desc["method"], desc["variant"]) if v != "initial"]
    if baseline not in registered:
        raise InputError(f"baseline method {baseline!r} is not in the metrics table (methods: {', '.join(registered)})")
    if not selections:
        return _nonempty([Family("configured", tuple((m, baseline) for m in registered if m != baseline))])
    records = {r["base"]: r for r in selections}
    if baseline not in records:
        raise InputError(f"the baseline {baseline!r} has no selection record: it must be tuned too "
                         f"(tuned: {', '.join(records)})")
    absent = [name for r in records.values() for name in (r["base"], r["tuned"], r["paper"]) if name not in registered]
    if absent:
        raise InputError(f"test metrics lack method(s) of the tuning run: {', '.join(dict.fromkeys(absent))}")
    tuned = {r["tuned"] for r in records.values()}
    paper_rows = [r["paper"] for r in records.values()]
    paper_baseline = records[baseline]["paper"]
    untuned = [m for m in registered if m not in tuned]
    if paper_baseline == baseline:  # the configured settings are the paper's: one family
        paper = [m for m in untuned if m != baseline]
        configured = []
    else:
        paper = [m for m in untuned if m in paper_rows and m != paper_baseline]
        configured = [m for m in untuned if m not in paper_rows and m != baseline]
    tuned_baseline = records[baseline]["tuned"]
    return _nonempty([
        Family("paper", tuple((m, paper_baseline) for m in paper)),
        Family("configured", tuple((m, baseline) for m in configured)),
        Family("tuned", tuple((r["tuned"], tuned_baseline) for r in records.values()
                                       if r["tuned"] != tuned_baseline)),
        Family("tuning", tuple((r["tuned"], r["base"]) for r in records.values())),
    ])


def _nonempty(families: list[Family]) -> list[Family]:
    return [f for f in families if f.pairs]


def family_tests(metrics_df: pd.DataFrame, families: Sequence[Family], *, metrics: Sequence[str] = STATISTICS_METRICS,
                 n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every pair of every family on every metric, Holm-corrected per (family, metric).

    Columns ``family, metric`` and ``featreg.evaluation.statistics.COMPARISON_COLUMNS``.
    """
    df = normalise_metrics(metrics_df)
    frames = [
        compare_pairs(df, metric, family.pairs, n_resamples=n_resamples, seed=seed)
        .assign(family=family.key, metric=metric)
        for family in families for metric in metrics
    ]
    columns = ["family", "metric", *COMPARISON_COLUMNS]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def verdict(tests: pd.DataFrame, families: Sequence[Family]) -> list[str]:
    """One plain paragraph per family: better, worse and not significantly different per verdict metric.

    Each method is named with its mean paired difference (method − reference), the
    bootstrap 95 % CI and n. A method that gains Dice while folding significantly
    more is named as trading accuracy against smoothness.
    """
    return [_family_verdict(tests[tests["family"] == family.key], family) for family in families]


def verdict_reading(n_resamples: int, seed: int) -> str:
    """How to read the verdict sentences: the test, the correction, the difference and its interval."""
    interval = (f"percentile-bootstrap 95 % CI, {n_resamples} resamples, seed {seed}" if n_resamples
                else "no CI computed")
    return (f"How to read: better / worse = Holm-corrected paired two-sided Wilcoxon p < {SIGNIFICANCE}, Holm "
            f"within each family and metric; Δ = mean paired difference (method − reference) over the n pairs with "
            f"a value for both, [{interval}]. Dice is unitless and higher is better; HD95 (mm) and %J≤0 "
            f"(percent of pixels, Δ in percentage points) are better lower. A tuned method is only ever "
            f"compared with the tuned baseline.")


def _family_verdict(tests: pd.DataFrame, family: Family) -> str:
    count = f"{len(family.pairs)} method{'s' if len(family.pairs) != 1 else ''}"
    if family.key == "tuning":
        intro = f"Effect of tuning, each method tuned against itself untuned ({count})"
        words = ("tuning improved", "tuning worsened", "no significant change")
    else:
        intro = f"{SETTINGS_PHRASES[family.key]}, against {family.reference} ({count})"
        words = ("better", "worse", "not significantly different")
    clauses = []
    outcome: dict[str, dict[str, int]] = {}
    for metric, (label, decimals, sign) in VERDICT_METRICS.items():
        rows = tests[tests["metric"] == metric]
        groups: dict[int, list[str]] = {1: [], -1: [], 0: []}
        for _, row in rows.iterrows():
            direction = _direction(row, sign)
            outcome.setdefault(row["method"], {})[metric] = direction
            groups[direction].append(f"{row['method']} ({_difference(row, decimals)})")
        parts = [f"{word}: {', '.join(groups[d])}" for word, d in zip(words, (1, -1, 0)) if groups[d]]
        clauses.append(f"In {label}, {'; '.join(parts) or 'no comparison'}.")
    text = f"{intro}: {clauses[0][0].lower()}{clauses[0][1:]} " + " ".join(clauses[1:])
    n = int(tests["n_pairs"].min()) if len(tests) else 0
    smallest = min(1.0, len(family.pairs) * 2.0 / 2**n)  # exact two-sided Wilcoxon, every difference one sign
    if smallest >= SIGNIFICANCE and not (tests["p_holm"] < SIGNIFICANCE).any():
        text += (f" With n = {n} pairs, the exact two-sided Wilcoxon test cannot give a Holm-corrected p below "
                 f"{smallest:.3g}, so no difference can be significant here: 'not significantly different' says "
                 f"nothing.")
    traders = [m for m, o in outcome.items() if o.get("dice_mean") == 1 and o.get("neg_jac_pct") == -1]
    if traders:
        text += (f" {', '.join(traders)} gain{'s' if len(traders) == 1 else ''} Dice only while folding "
                 f"significantly more (%J≤0 higher): {'it trades' if len(traders) == 1 else 'they trade'} accuracy "
                 f"against smoothness, not a free gain.")
    return text


def _direction(row: pd.Series, sign: int) -> int:
    """1 better, -1 worse, 0 not significantly different (``sign``: +1 when higher is better)."""
    if not np.isfinite(row["p_holm"]) or row["p_holm"] >= SIGNIFICANCE or row["mean_diff"] == 0:
        return 0
    return 1 if np.sign(row["mean_diff"]) == sign else -1


def _difference(row: pd.Series, decimals: int) -> str:
    """``Δ +0.012 [−0.004, +0.020], n = 30``; the interval is left out when it was not computed."""
    def number(value: float) -> str:
        if not np.isfinite(value):
            return "–"
        text = f"{value:+.{decimals}f}"
        return f"{0:.{decimals}f}" if float(text) == 0 else text.replace("-", "−")

    interval = f" [{number(row['ci_low'])}, {number(row['ci_high'])}]" if np.isfinite(row["ci_low"]) else ""
    return f"Δ {number(row['mean_diff'])}{interval}, n = {int(row['n_pairs'])}"


def settings_of(families: Sequence[Family]) -> dict[str, str]:
    """Method -> the title of the family it is tested in or the reference of (the tuning family aside)."""
    settings = {}
    for family in families:
        if family.key != "tuning":
            for method, reference in family.pairs:
                settings[method] = settings[reference] = family.title
    return settings

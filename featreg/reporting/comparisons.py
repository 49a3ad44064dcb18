"""Like-for-like comparisons: which row is tested against which, in which Holm family, and each family's answer.

A method is only ever tested against a reference run at the same kind of settings,
so that a gain from tuning alone is never read as a gain of the method:

- "paper settings": each method at the paper's fixed settings against the baseline at them;
- "configured settings": each method at the config's settings against the baseline at them
  (a family of its own only when a tuning run also has distinct ``<method>@paper`` rows;
  without a tuning run it is the only family);
- "tuned": each ``<method>@tuned`` against ``<baseline>@tuned``;
- "tuning": the effect of tuning itself, ``<method>@tuned`` against ``<method>``;
- "encode": each row that encodes the moving image once against the same method encoding it
  every iteration (the grid's ``-once`` / ``-each`` twins), on the same pairs.

Each family is Holm-corrected on its own, per metric. Its answer (:func:`family_answer`) is
one sentence, the best method in mean Dice and the counts of better, worse and not
significantly different methods per metric; :func:`method_table` lists every method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featreg.errors import InputError
from featreg.evaluation.statistics import COMPARISON_COLUMNS, compare_pairs
from featreg.reporting.tables import FAMILY_TITLES, OWN_REFERENCES, format_p, method_descriptors
from featreg.evaluation.metrics_table import normalise_metrics
from featreg.experiment.methods import ENCODE_SUFFIX

STATISTICS_METRICS = ("dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct")
"""Metrics every family is tested on (statistics.csv)."""

SIGNIFICANCE = 0.05
"""A difference counts when its Holm-corrected Wilcoxon p is below this."""

VERDICT_METRICS = {
    # column: (name, unit of the difference, decimals, sign of a better difference)
    "dice_mean": ("Dice", "unitless", 3, 1),
    "hd95_mean": ("HD95", "mm", 2, -1),
    "neg_jac_pct": ("%J≤0", "percentage points", 3, -1),
}
"""The metrics the answer counts, the forest plots draw and the per-method table lists."""


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
        """The one reference of a family that has one (None for the tuning and encode families)."""
        return None if self.key in OWN_REFERENCES else self.pairs[0][1]

    @property
    def against(self) -> str:
        """What each method is compared with, as the report names it: the one reference, or each method's own."""
        return self.reference or OWN_REFERENCES[self.key]

    @property
    def comparison(self) -> str:
        """The family's comparison in a caption's words."""
        if self.reference:
            return f"each method against {self.reference}"
        own = {"tuning": "at its tuned settings against itself untuned",
               "encode": "encoding once against itself encoding every iteration"}
        return f"each method {own[self.key]}"


def encode_twins(methods: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(method encoding once, the same method encoding every iteration) for each pair of grid twins
    (:data:`featreg.experiment.methods.ENCODE_SUFFIX`) among ``methods``."""
    names = set(methods)
    once, each = ENCODE_SUFFIX["once"], ENCODE_SUFFIX["each_iteration"]
    twins = [(f"{m}{once}", m) for m in methods if f"{m}{once}" in names]
    twins += [(m.removesuffix(each), m) for m in methods if m.endswith(each) and m.removesuffix(each) in names]
    return tuple(twins)


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
    encode = Family("encode", encode_twins(registered))
    if not selections:
        return _nonempty([Family("configured", tuple((m, baseline) for m in registered if m != baseline)), encode])
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
        encode,
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


@dataclass(frozen=True)
class Answer:
    """What one family says, read in ten seconds (:func:`family_answer`).

    ``sentence`` answers "does the method help here?" in mean Dice; ``best`` is the
    test row (``COMPARISON_COLUMNS``) of the highest Δ mean Dice; ``counts`` holds, per
    verdict metric, how many methods are better, worse and not significantly different.
    """

    family: Family
    sentence: str
    best: pd.Series
    counts: pd.DataFrame


VERDICT_WORDS = {1: "better", -1: "worse", 0: "not significant"}
"""The verdict of one comparison, from its Holm-adjusted p and the sign of its Δ (:func:`direction`)."""

VERDICT_PHRASES = VERDICT_WORDS | {0: "not significantly different"}
"""The verdicts as the sentences say them."""

VARIANT_NOUNS = {
    "feature": "variant-1 (features only) method",
    "combined": "variant-2 (features + image term) method",
    "classical": "classical method",
    "baseline": "other intensity-only method",
}
"""How the answer sentence names a group of methods of one variant (plural: + "s")."""

FEATURE_GUIDED = ("feature", "combined")


def count_methods(n: int) -> str:
    """``1 method``, ``3 methods``."""
    return f"{n} method{'' if n == 1 else 's'}"


def direction(p_holm: float, mean_diff: float, sign: int) -> int:
    """1 better, -1 worse, 0 not significantly different (``sign``: +1 when higher is better)."""
    if not np.isfinite(p_holm) or p_holm >= SIGNIFICANCE or mean_diff == 0:
        return 0
    return 1 if np.sign(mean_diff) == sign else -1


def smallest_holm_p(n_pairs: int, n_methods: int) -> float:
    """The smallest Holm-adjusted p a family can reach: every difference one sign under the exact
    two-sided Wilcoxon test (2 / 2**n), times the number of methods."""
    return min(1.0, n_methods * 2.0 / 2**n_pairs)


def forest_rows(tests: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One family's rows of ``metric`` for a forest plot, best first.

    Sorted by Δ in the metric's better direction (highest Δ Dice first, lowest Δ HD95
    first), ties by method name; ``significant`` is Holm-adjusted p < :data:`SIGNIFICANCE`
    and ``direction`` the verdict (:func:`direction`).
    """
    sign = VERDICT_METRICS[metric][3]
    rows = tests[tests["metric"] == metric]
    rows = rows.assign(
        significant=rows["p_holm"].lt(SIGNIFICANCE),
        direction=[direction(p, d, sign) for p, d in zip(rows["p_holm"], rows["mean_diff"])],
        _key=-sign * rows["mean_diff"],
    )
    return rows.sort_values(["_key", "method"], kind="stable").drop(columns="_key").reset_index(drop=True)


def family_answer(tests: pd.DataFrame, family: Family, variants: Mapping[str, str]) -> Answer:
    """The answer of one family: its sentence, its best method in mean Dice and its counts.

    ``tests`` holds the family's rows of :func:`family_tests`; ``variants`` maps each
    method to its variant (``method_descriptors``), by which the sentence groups them.
    """
    tests = tests[tests["family"] == family.key]
    if tests.empty:
        raise InputError(f"no tests of the family {family.key!r}")
    unknown = sorted(set(tests["method"]) - set(variants))
    if unknown:
        raise InputError(f"the variant of method(s) {', '.join(unknown)} is not known")
    dice = forest_rows(tests, "dice_mean")
    counts = pd.DataFrame(
        [{"metric": name, **{VERDICT_WORDS[d]: int(forest_rows(tests, metric)["direction"].eq(d).sum())
                             for d in (1, -1, 0)}}
         for metric, (name, *_) in VERDICT_METRICS.items()]
    )
    return Answer(family, _sentence(tests, dice, family, variants), dice.iloc[0], counts)


def _sentence(tests: pd.DataFrame, dice: pd.DataFrame, family: Family, variants: Mapping[str, str]) -> str:
    n = int(tests["n_pairs"].min())
    if not tests["p_holm"].lt(SIGNIFICANCE).any() and smallest_holm_p(n, len(family.pairs)) >= SIGNIFICANCE:
        own = "its untuned self" if family.key == "tuning" else "the same method encoding every iteration"
        return (f"No method can be told apart from {family.reference or own} here: with n = {n} "
                f"pairs and {count_methods(len(family.pairs))}, the smallest Holm-adjusted p the exact Wilcoxon test can "
                f"give is {smallest_holm_p(n, len(family.pairs)):.3g}.")
    counts = dice["direction"].value_counts()
    if family.key == "tuning":
        return (f"Tuning improves mean Dice for {counts.get(1, 0)} of {count_methods(len(dice))}, worsens it for "
                f"{counts.get(-1, 0)} and leaves {counts.get(0, 0)} not significantly different.")
    if family.key == "encode":
        return (f"Encoding the moving image once, instead of every iteration, improves mean Dice for "
                f"{counts.get(1, 0)} of {count_methods(len(dice))}, worsens it for {counts.get(-1, 0)} and leaves "
                f"{counts.get(0, 0)} not significantly different.")
    reference = family.reference
    guided = dice[dice["method"].map(variants).isin(FEATURE_GUIDED)]
    subject = "feature-guided method" if len(guided) else "method"
    beats = int((guided if len(guided) else dice)["direction"].eq(1).sum())
    lead = (f"No {subject} beats {reference} in mean Dice" if beats == 0
            else f"{beats} of {len(guided) or len(dice)} {subject}s beat {reference} in mean Dice")
    groups = dict(list(dice.groupby(dice["method"].map(variants), sort=False)))
    rank = {variant: i for i, variant in enumerate(VARIANT_NOUNS)}
    clauses = [_group_clause(groups[v], v, reference) for v in sorted(groups, key=lambda v: rank.get(v, len(rank)))]
    text = f"{lead}: {'; '.join(clauses)}."
    folding = forest_rows(tests, "neg_jac_pct").set_index("method")["direction"]
    traders = [m for m in dice.loc[dice["direction"].eq(1), "method"] if folding.get(m) == -1]
    if traders:
        text += (f" {_join(traders)} gain{'s' if len(traders) == 1 else ''} Dice only while folding significantly "
                 f"more (%J≤0 higher).")
    return text


def _group_clause(group: pd.DataFrame, variant: str, reference: str) -> str:
    """How the methods of one variant fare in mean Dice, e.g. ``all 4 variant-1 (...) methods are worse``."""
    if len(group) == 1:
        row = group.iloc[0]
        return f"{row['method']} is {VERDICT_PHRASES[row['direction']]} (Δ {_number(row['mean_diff'], 3)})"
    noun = f"{VARIANT_NOUNS.get(variant, f'{variant} method')}s"
    outcomes = group["direction"].value_counts()
    every = "both" if len(group) == 2 else f"all {len(group)}"
    if len(outcomes) == 1 and outcomes.index[0] == 0:
        spread = float(group["mean_diff"].abs().max())
        return f"{every} {noun} are within ±{spread:.3f} of {reference} (none significantly different)"
    if len(outcomes) == 1:
        return f"{every} {noun} are {VERDICT_WORDS[outcomes.index[0]]}"
    parts = [f"{outcomes.get(d, 0)} {VERDICT_PHRASES[d]}" for d in (1, -1, 0) if outcomes.get(d, 0)]
    return f"of the {len(group)} {noun}, {_join(parts)}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def best_line(answer: Answer, n_resamples: int) -> str:
    """The family's best method in mean Dice: its Δ, CI (unadjusted), Holm-adjusted p, n and verdict."""
    row = answer.best
    interval = (f"95 % CI [{_number(row['ci_low'], 3)}, {_number(row['ci_high'], 3)}], unadjusted bootstrap"
                if n_resamples and np.isfinite(row["ci_low"]) else "no CI computed")
    verdict = VERDICT_PHRASES[row["direction"]]
    return (f"Highest Δ mean Dice: {row['method']} against {row['reference']}, Δ {_number(row['mean_diff'], 3)} "
            f"({interval}), Holm-adjusted p {format_p(row['p_holm'])}, n = {int(row['n_pairs'])} pairs: {verdict}.")


def method_table(tests: pd.DataFrame, family: Family) -> pd.DataFrame:
    """Every method of one family, best Δ mean Dice first: per verdict metric Δ, CI, Holm p and verdict."""
    rows = tests[tests["family"] == family.key]
    order = forest_rows(rows, "dice_mean")[["method", "reference", "n_pairs"]]
    table = order.rename(columns={"method": "Method", "reference": "Reference", "n_pairs": "n"})
    for metric, (name, _, decimals, _) in VERDICT_METRICS.items():
        values = forest_rows(rows, metric).set_index("method").reindex(order["method"])
        table[f"{name} Δ"] = [_number(v, decimals) for v in values["mean_diff"]]
        table[f"{name} 95 % CI"] = [f"[{_number(lo, decimals)}, {_number(hi, decimals)}]" if np.isfinite(lo) else "–"
                                    for lo, hi in zip(values["ci_low"], values["ci_high"])]
        table[f"{name} p (Holm)"] = [format_p(p) for p in values["p_holm"]]
        table[f"{name} verdict"] = [VERDICT_WORDS[d] for d in values["direction"]]
    return table.reset_index(drop=True)


def method_table_caption(family: Family, n_resamples: int, seed: int) -> str:
    """What :func:`method_table` shows: the test, the correction, the difference and its interval."""
    interval = (f"unadjusted percentile-bootstrap 95 % CI ({n_resamples} resamples, seed {seed}) of the mean "
                f"difference: not corrected for the {len(family.pairs)} comparisons, so a CI may exclude 0 while the "
                f"Holm-adjusted p is ≥ {SIGNIFICANCE}; the verdict follows the adjusted p" if n_resamples
                else "no CI computed")
    return (f"{family.title.capitalize()}: {family.comparison}, n pairs with a value for both. Δ = mean paired difference (method − "
            f"reference); Dice unitless, higher is better; HD95 in mm and %J≤0 in percentage points, lower is "
            f"better. CI: {interval}. p (Holm): paired two-sided Wilcoxon signed-rank test, Holm-adjusted across "
            f"the {count_methods(len(family.pairs))} of this family per metric. Verdict: better / worse when the adjusted "
            f"p < {SIGNIFICANCE}, else not significant. Rows sorted by Δ mean Dice, highest first.")


def _number(value: float, decimals: int) -> str:
    """``+0.012``, ``−0.004`` (a true minus sign), ``0.000`` for a rounded zero, "–" when undefined."""
    if not np.isfinite(value):
        return "–"
    text = f"{value:+.{decimals}f}"
    return f"{0:.{decimals}f}" if float(text) == 0 else text.replace("-", "−")


def settings_of(families: Sequence[Family]) -> dict[str, str]:
    """Method -> the title of the family it is tested in or the reference of (the tuning and encode families aside)."""
    settings = {}
    for family in families:
        if family.key not in OWN_REFERENCES:
            for method, reference in family.pairs:
                settings[method] = settings[reference] = family.title
    return settings

"""Cohort statistics over the metrics table: summaries, paired tests, Pareto fronts, selection.

Conventions (stated in every table and figure caption that uses them):

- mean ± std are over the pairs whose value is finite; NaNs (a failed pair, an
  HD95 with an empty mask) are excluded and ``n`` counts the finite values.
  std is the sample standard deviation (``ddof=1``).
- Methods are compared with a paired two-sided Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``, zero differences dropped) on the patients that
  both methods have a finite value for; p-values are Holm-corrected within
  one family of comparisons (e.g. every method against the same baseline at
  the same settings) on one metric.
- The effect size is the mean paired difference (method − baseline) with a
  seeded percentile-bootstrap 95 % confidence interval.
- A setting is selectable only when it has a finite Dice and %J≤0 on every
  pair (:func:`eligible_settings`): one that fails on a pair is not ranked by
  the pairs it survived. When the folding limit excludes every complete
  setting, the selection falls back to the one that folds least and says so
  (:class:`Selection`), so that one method's grid never stops a workflow.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import pandas as pd
from scipy import stats

from featreg.errors import InputError

logger = logging.getLogger(__name__)

TIE_BREAK = "highest mean Dice, then lowest mean %J≤0, then lowest mean sdlogJ, then method name (ascending)"
"""How :func:`select_setting` orders settings; documented so that a selection is reproducible."""


class Selection(str):
    """The selected setting's name, and ``fallback``: None when it met the folding limit, else why it was taken.

    A ``str``, so that a caller wanting only the name (a dict key, a JSON value) uses it as
    one, and a caller writing a selection record adds ``fallback`` beside it.
    """

    fallback: str | None

    def __new__(cls, name: str, fallback: str | None = None) -> Self:
        selection = super().__new__(cls, name)
        selection.fallback = fallback
        return selection


@dataclass(frozen=True)
class Summary:
    """Mean ± std over the finite values of one metric; ``n`` counts them."""

    n: int
    mean: float
    std: float


def describe(values: Sequence[float] | np.ndarray) -> Summary:
    """Mean and sample std (ddof=1) of the finite entries; NaN where there are too few."""
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    mean = float(arr.mean()) if n else float("nan")
    std = float(arr.std(ddof=1)) if n > 1 else float("nan")
    return Summary(n=n, mean=mean, std=std)


def summarize(df: pd.DataFrame, metrics: Sequence[str], *, by: str = "method") -> pd.DataFrame:
    """Per group of ``by``: ``n_<m>``, ``mean_<m>`` and ``std_<m>`` for each metric column ``m``.

    Groups keep their order of first appearance in ``df``.
    """
    _require_columns(df, [by, *metrics])
    rows = []
    for name, group in df.groupby(by, sort=False):
        row: dict[str, object] = {by: name}
        for metric in metrics:
            s = describe(pd.to_numeric(group[metric], errors="coerce"))
            row[f"n_{metric}"] = s.n
            row[f"mean_{metric}"] = s.mean
            row[f"std_{metric}"] = s.std
        rows.append(row)
    return pd.DataFrame(rows, columns=[by] + [f"{p}_{m}" for m in metrics for p in ("n", "mean", "std")])


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaNs stay NaN and do not count towards m.

    The i-th smallest of m p-values is multiplied by (m - i + 1), then a running
    maximum keeps the adjusted values monotone, and they are capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm expects a 1-D sequence of p-values, got shape {p.shape}")
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = np.full_like(p, np.nan)
    idx = np.flatnonzero(finite)
    m = idx.size
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 9999,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its percentile-bootstrap CI.

    Deterministic for a given ``seed``. Fewer than two values give a NaN interval.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(arr.mean())
    if arr.size < 2 or np.all(arr == arr[0]):
        low = high = mean if arr.size >= 2 else float("nan")
        return mean, low, high
    res = stats.bootstrap(
        (arr,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_values(
    df: pd.DataFrame, metric: str, method: str, baseline: str, *, by: str = "method", key: str = "patient"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Values of ``method`` and ``baseline`` on the patients where both are finite, aligned by ``key``."""
    _require_columns(df, [by, key, metric])
    a = _series(df, metric, method, by=by, key=key)
    b = _series(df, metric, baseline, by=by, key=key)
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    return joined["a"].to_numpy(float), joined["b"].to_numpy(float), [str(k) for k in joined.index]


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(statistic, p) of the paired two-sided Wilcoxon signed-rank test.

    Identical samples give p = 1; no pairs give NaN.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in shape: {x.shape} vs {y.shape}")
    if x.size == 0:
        return float("nan"), float("nan")
    if np.all(x == y):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(x, y, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def compare_to_baseline(
    df: pd.DataFrame,
    metric: str,
    baseline: str,
    *,
    methods: Sequence[str] | None = None,
    by: str = "method",
    key: str = "patient",
    n_resamples: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Each method against ``baseline`` on ``metric``: :func:`compare_pairs` with one reference.

    The Holm family is all ``methods`` (default: every method except the baseline).
    """
    _require_columns(df, [by, key, metric])
    present = list(dict.fromkeys(df[by].astype(str)))
    if baseline not in present:
        raise InputError(f"baseline method {baseline!r} is not in the metrics table (methods: {', '.join(present)})")
    if methods is None:
        methods = [m for m in present if m != baseline]
    return compare_pairs(df, metric, [(m, baseline) for m in methods], by=by, key=key, n_resamples=n_resamples,
                         seed=seed)


COMPARISON_COLUMNS = ("method", "reference", "n_pairs", "statistic", "p", "p_holm", "mean_diff", "ci_low", "ci_high")


def compare_pairs(
    df: pd.DataFrame,
    metric: str,
    pairs: Sequence[tuple[str, str]],
    *,
    by: str = "method",
    key: str = "patient",
    n_resamples: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Each (method, reference) of ``pairs`` on ``metric``: paired Wilcoxon, Holm, mean difference with CI.

    Columns :data:`COMPARISON_COLUMNS`. The pairs are one Holm family: each
    p-value is corrected for the number of pairs. ``mean_diff`` is the mean of
    (method − reference) over the patients where both are finite, with a seeded
    percentile-bootstrap 95 % CI; ``n_resamples=0`` skips the bootstrap (NaN interval).
    """
    _require_columns(df, [by, key, metric])
    rows = []
    for method, reference in pairs:
        x, y, _ = paired_values(df, metric, method, reference, by=by, key=key)
        statistic, p = wilcoxon_p(x, y)
        if n_resamples:
            mean_diff, low, high = bootstrap_mean_ci(x - y, n_resamples=n_resamples, seed=seed)
        else:
            mean_diff, low, high = describe(x - y).mean, float("nan"), float("nan")
        rows.append({"method": method, "reference": reference, "n_pairs": int(x.size), "statistic": statistic,
                     "p": p, "p_holm": float("nan"), "mean_diff": mean_diff, "ci_low": low, "ci_high": high})
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out["p_holm"] = holm(out["p"].to_numpy(float)) if len(out) else []
    return out


def pareto_mask(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (n, k).

    Row a dominates row b when it is at least as good in every objective and
    strictly better in one; ``maximize[j]`` says whether objective j is maximised.
    Rows with a NaN are never on the front. Duplicate rows are both kept.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(maximize):
        raise ValueError(f"points must have shape (n, {len(maximize)}), got {pts.shape}")
    signed = np.where(np.asarray(maximize, dtype=bool), -pts, pts)  # minimise everything
    valid = np.all(np.isfinite(signed), axis=1)
    mask = valid.copy()
    for i in np.flatnonzero(valid):
        others = signed[valid]
        dominated = np.all(others <= signed[i], axis=1) & np.any(others < signed[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def eligible_settings(
    df: pd.DataFrame,
    *,
    max_neg_jac_pct: float = 0.1,
    dice: str = "dice_mean",
    folding: str = "neg_jac_pct",
    by: str = "method",
    key: str = "patient",
) -> pd.Series:
    """Per group of ``by`` (order of first appearance): whether the selection rule may pick it.

    Eligible: complete (:func:`complete_settings` on ``dice`` and ``folding``) and
    mean ``folding`` at most ``max_neg_jac_pct``. A setting that fails on some
    pairs is never ranked by the pairs it survived.
    """
    if not max_neg_jac_pct >= 0:
        raise ValueError(f"max_neg_jac_pct must be >= 0, got {max_neg_jac_pct}")
    complete = complete_settings(df, [dice, folding], by=by, key=key)
    means = summarize(df, [folding], by=by).set_index(by)[f"mean_{folding}"]
    return complete & (means.reindex(complete.index) <= max_neg_jac_pct)


def complete_settings(df: pd.DataFrame, metrics: Sequence[str], *, by: str = "method",
                      key: str = "patient") -> pd.Series:
    """Per group of ``by`` (order of first appearance): whether it has, for every ``key`` in ``df``,
    a row with a finite value of each of ``metrics`` (and status "ok" where ``df`` has a status column)."""
    _require_columns(df, [by, key, *metrics])
    good = np.all(np.isfinite(df[list(metrics)].apply(pd.to_numeric, errors="coerce").to_numpy(float)), axis=1)
    if "status" in df.columns:
        good &= (df["status"].astype(str) == "ok").to_numpy()
    expected = set(df[key])
    covered = df[good].groupby(by, sort=False)[key].agg(set)
    names = pd.Index(df[by].drop_duplicates())
    return pd.Series([covered.get(name, set()) >= expected for name in names], index=names, dtype=bool)


def select_setting(
    df: pd.DataFrame,
    *,
    max_neg_jac_pct: float = 0.1,
    methods: Sequence[str] | None = None,
    dice: str = "dice_mean",
    folding: str = "neg_jac_pct",
    smoothness: str = "sdlogj",
    by: str = "method",
    key: str = "patient",
) -> Selection:
    """The tuning choice: the method with the highest mean Dice among the eligible ones.

    ``df`` is the per-pair metrics table; ``methods`` restricts the candidates
    (e.g. one family's λ or α grid). Eligible (:func:`eligible_settings`): a finite
    Dice and %J≤0 on every pair of the candidates' rows and mean %J≤0 at most X.
    Ties follow :data:`TIE_BREAK`. When the limit excludes every complete candidate,
    the choice is the one that folds least (ties: higher mean Dice, lower mean
    sdlogJ, name) and its ``fallback`` says so: a grid that never reaches the limit
    still gives a tuned row, flagged, rather than a failed job. Raises InputError
    when no candidate is complete (each failed on some pair), as no choice is then sound.
    """
    if methods is not None:
        _require_columns(df, [by])
        missing = sorted(set(methods) - set(df[by]))
        if missing:
            raise InputError(f"methods not in the metrics table: {', '.join(missing)}")
        df = df[df[by].isin(methods)]
    if df.empty:
        raise InputError("no candidate settings to select from")
    eligible = eligible_settings(df, max_neg_jac_pct=max_neg_jac_pct, dice=dice, folding=folding, by=by, key=key)
    table = summarize(df, [dice, folding, smoothness], by=by)
    ok = table[table[by].map(eligible).to_numpy(bool)]
    if not ok.empty:
        ranked = ok.assign(_neg_dice=-ok[f"mean_{dice}"]).sort_values(
            ["_neg_dice", f"mean_{folding}", f"mean_{smoothness}", by], kind="stable", na_position="last"
        )
        choice = str(ranked.iloc[0][by])
        logger.info("selected %s (mean %s %.4f) among %d eligible settings (complete, mean %s <= %g %%)",
                    choice, dice, ranked.iloc[0][f"mean_{dice}"], len(ok), folding, max_neg_jac_pct)
        return Selection(choice)
    complete = complete_settings(df, [dice, folding], by=by, key=key)
    if not complete.any():
        raise InputError(
            f"no setting has a finite {dice} and {folding} on all {df[key].nunique()} pairs (every candidate failed "
            f"on some pair: {', '.join(map(str, complete.index))}); fix the failures or widen the grid"
        )
    candidates = table[table[by].map(complete).to_numpy(bool)]
    ranked = candidates.assign(_neg_dice=-candidates[f"mean_{dice}"]).sort_values(
        [f"mean_{folding}", "_neg_dice", f"mean_{smoothness}", by], kind="stable", na_position="last"
    )
    least = ranked.iloc[0]
    reason = (f"no setting has mean {folding} <= {max_neg_jac_pct:g} %: the one that folds least, "
              f"{least[f'mean_{folding}']:.4g} %, was taken; widen the grid towards more regularisation")
    logger.warning("selected %s as a fallback: %s", least[by], reason)
    return Selection(str(least[by]), fallback=reason)


def _series(df: pd.DataFrame, metric: str, method: str, *, by: str, key: str) -> pd.Series:
    rows = df[df[by].astype(str) == method]
    if rows.empty:
        raise InputError(f"method {method!r} is not in the metrics table")
    if rows[key].duplicated().any():
        dup = rows.loc[rows[key].duplicated(), key].iloc[0]
        raise InputError(f"method {method!r} has more than one row for {key} {dup!r}")
    return pd.to_numeric(rows.set_index(key)[metric], errors="coerce")


def _require_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"metrics table lacks columns: {', '.join(missing)}")

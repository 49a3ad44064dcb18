"""Cohort statistics on hand-made tables with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from featreg.errors import InputError
from featreg.evaluation.statistics import (
    COMPARISON_COLUMNS,
    bootstrap_mean_ci,
    compare_pairs,
    compare_to_baseline,
    describe,
    eligible_settings,
    holm,
    paired_values,
    pareto_mask,
    select_setting,
    summarize,
    wilcoxon_p,
)  # fmt: skip


def test_describe_excludes_nans_and_counts_finite_values():
    s = describe([1.0, 2.0, np.nan, 3.0, np.inf])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)  # sample std of 1, 2, 3
    assert describe([np.nan]).n == 0 and np.isnan(describe([np.nan]).mean)
    assert np.isnan(describe([4.0]).std)


def test_summarize_per_method_with_nans():
    df = pd.DataFrame({"method": ["a", "a", "a", "b", "b"], "dice": [0.5, np.nan, 0.7, 0.9, 0.8]})
    out = summarize(df, ["dice"]).set_index("method")
    assert out.loc["a", "n_dice"] == 2 and out.loc["a", "mean_dice"] == pytest.approx(0.6)
    assert out.loc["a", "std_dice"] == pytest.approx(np.sqrt(0.02))
    assert list(out.index) == ["a", "b"]


def test_holm_hand_computed():
    # sorted 0.01, 0.03, 0.04, 0.20 → ×4, ×3, ×2, ×1 = 0.04, 0.09, 0.08, 0.20 → running max 0.04, 0.09, 0.09, 0.20
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.20]), [0.04, 0.09, 0.09, 0.20])
    np.testing.assert_allclose(holm([0.5, np.nan, 0.01]), [0.5, np.nan, 0.02])  # NaN not counted: m = 2
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1, monotone
    assert holm([]).size == 0
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        holm([1.5])


def test_wilcoxon_hand_computed_and_matches_scipy():
    y = np.zeros(5)
    # differences 1, -2, 3, 4, 5: W- = 2; P(W- <= 2) = |{}, {1}, {2}| / 2^5, two-sided p = 6/32
    statistic, p = wilcoxon_p(np.array([1.0, -2, 3, 4, 5]), y)
    assert (statistic, p) == (2.0, pytest.approx(6 / 32))
    x = np.array([0.81, 0.79, 0.85, 0.90, 0.77, 0.83, 0.88])
    z = np.array([0.80, 0.81, 0.82, 0.86, 0.70, 0.84, 0.80])
    assert wilcoxon_p(x, z)[1] == pytest.approx(stats.wilcoxon(x, z).pvalue)
    assert wilcoxon_p(x, x) == (0.0, 1.0)
    assert np.isnan(wilcoxon_p(np.array([]), np.array([]))[1])


def test_paired_values_use_patients_present_in_both():
    df = pd.DataFrame({
        "method": ["a", "a", "a", "b", "b", "b"],
        "patient": ["p1", "p2", "p3", "p2", "p3", "p4"],
        "dice": [0.1, 0.2, np.nan, 0.5, 0.6, 0.7],
    })
    x, y, patients = paired_values(df, "dice", "a", "b")
    assert patients == ["p2"] and x.tolist() == [0.2] and y.tolist() == [0.5]


def test_compare_to_baseline_table_and_errors():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.6, 0.8, 10)
    df = pd.concat([
        pd.DataFrame({"method": "ncc", "patient": range(10), "dice": base}),
        pd.DataFrame({"method": "better", "patient": range(10), "dice": base + 0.05 + rng.normal(0, 0.005, 10)}),
        pd.DataFrame({"method": "same", "patient": range(10), "dice": base}),
    ])
    out = compare_to_baseline(df, "dice", "ncc", n_resamples=500).set_index("method")
    assert out.loc["better", "n_pairs"] == 10
    assert out.loc["better", "p"] == pytest.approx(2 / 2**10)  # all ten differences positive, exact test
    assert out.loc["better", "p_holm"] == pytest.approx(2 * 2 / 2**10)
    assert out.loc["better", "ci_low"] < 0.05 < out.loc["better", "ci_high"]
    assert out.loc["same", "p"] == 1.0 and out.loc["same", "mean_diff"] == 0.0
    with pytest.raises(InputError, match="baseline method 'nope' is not in the metrics table"):
        compare_to_baseline(df, "dice", "nope")
    with pytest.raises(InputError, match="more than one row for patient"):
        compare_to_baseline(pd.concat([df, df.iloc[:1]]), "dice", "ncc")


def test_compare_pairs_each_against_its_own_reference_in_one_holm_family():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.6, 0.8, 8)
    df = pd.concat([
        pd.DataFrame({"method": name, "patient": range(8), "dice": base + shift + rng.normal(0, 0.002, 8)})
        for name, shift in (("a", 0.0), ("a@tuned", 0.05), ("b", 0.0), ("b@tuned", 0.0))
    ])
    out = compare_pairs(df, "dice", [("a@tuned", "a"), ("b@tuned", "b")], n_resamples=0)
    assert out.columns.tolist() == list(COMPARISON_COLUMNS)
    assert out["reference"].tolist() == ["a", "b"]
    assert out.loc[0, "p"] == pytest.approx(2 / 2**8)  # all eight differences positive, exact test
    assert out.loc[0, "p_holm"] == pytest.approx(2 * 2 / 2**8)  # two comparisons in the family
    assert out.loc[1, "p"] > 0.05 and np.isnan(out.loc[0, "ci_low"])


def test_bootstrap_ci_contains_the_true_mean_and_is_deterministic():
    values = np.random.default_rng(3).normal(5.0, 1.0, 200)
    mean, low, high = bootstrap_mean_ci(values, n_resamples=2000, seed=7)
    assert low < 5.0 < high and low < mean < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.2)
    assert bootstrap_mean_ci(values, n_resamples=2000, seed=7) == (mean, low, high)
    assert bootstrap_mean_ci(values, n_resamples=2000, seed=8) != (mean, low, high)
    assert np.isnan(bootstrap_mean_ci([1.0], seed=0)[1])
    with pytest.raises(ValueError, match="n_resamples must be >= 1"):
        bootstrap_mean_ci(values, n_resamples=0)


def test_pareto_mask_hand_made():
    table = pd.DataFrame({
        "method": ["A", "B", "C", "D", "E", "F"],
        "dice": [0.80, 0.85, 0.75, 0.85, 0.70, np.nan],
        "sdlogj": [0.30, 0.40, 0.35, 0.50, 0.10, 0.0],
    })
    # C is dominated by A, D by B (same Dice, rougher); F has a NaN
    front = pareto_mask(table[["dice", "sdlogj"]].to_numpy(float), [True, False])
    assert table.loc[front, "method"].tolist() == ["A", "B", "E"]
    assert pareto_mask(np.array([[1.0, 1.0], [1.0, 1.0]]), [True, False]).tolist() == [True, True]
    with pytest.raises(ValueError, match=r"points must have shape \(n, 3\), got \(6, 2\)"):
        pareto_mask(table[["dice", "sdlogj"]].to_numpy(float), [True, False, True])


def _settings(rows):
    return pd.DataFrame(
        [{"method": m, "patient": p, "dice_mean": d, "neg_jac_pct": n, "sdlogj": s}
         for m, d, n, s in rows for p in ("p1", "p2")]
    )


def test_selection_rule_with_ties_and_exclusion():
    df = _settings([("a", 0.80, 0.05, 0.3), ("b", 0.85, 0.5, 0.3), ("c", 0.80, 0.02, 0.3), ("d", 0.70, 0.0, 0.1)])
    assert select_setting(df) == "c"  # b folds too much; a and c tie on Dice, c folds less
    assert select_setting(df, max_neg_jac_pct=1.0) == "b"
    assert select_setting(df, methods=["a", "d"]) == "a"
    tie = _settings([("z", 0.8, 0.0, 0.2), ("y", 0.8, 0.0, 0.2), ("x", 0.8, 0.0, 0.3)])
    assert select_setting(tie) == "y"  # x is rougher; y before z by name
    assert select_setting(df).fallback is None
    with pytest.raises(InputError, match="methods not in the metrics table: q"):
        select_setting(df, methods=["q"])


def test_a_setting_that_fails_on_a_pair_is_not_eligible():
    # b is best on its one surviving pair, but failed on the other two: it must not be ranked by it
    df = pd.DataFrame(
        [{"method": "a", "patient": p, "status": "ok", "dice_mean": 0.7, "neg_jac_pct": 0.0, "sdlogj": 0.1}
         for p in ("p1", "p2", "p3")]
        + [{"method": "b", "patient": p, "status": s, "dice_mean": d, "neg_jac_pct": 0.0, "sdlogj": 0.1}
           for p, s, d in (("p1", "ok", 0.9), ("p2", "failed", np.nan), ("p3", "failed", np.nan))]
    )
    assert eligible_settings(df).to_dict() == {"a": True, "b": False}
    assert select_setting(df) == "a"
    # a finite Dice is not enough: a NaN %J≤0, a row marked failed, or a missing pair also disqualify
    nan_folding = df.assign(status="ok", dice_mean=0.9).astype({"neg_jac_pct": float})
    nan_folding.loc[(nan_folding["method"] == "b") & (nan_folding["patient"] == "p2"), "neg_jac_pct"] = np.nan
    assert eligible_settings(nan_folding).to_dict() == {"a": True, "b": False}
    marked = df.assign(dice_mean=0.9)
    assert eligible_settings(marked).to_dict() == {"a": True, "b": False}
    missing = df[(df["method"] == "a") | (df["patient"] == "p1")].assign(status="ok")
    assert eligible_settings(missing).to_dict() == {"a": True, "b": False}
    with pytest.raises(InputError, match="no setting has a finite dice_mean and neg_jac_pct on all 3 pairs"):
        select_setting(df, methods=["b"])
    # among the complete settings the folding limit still applies: the fallback never takes b
    folds = pd.concat([df, df[df["method"] == "a"].assign(method="c", neg_jac_pct=0.5)])
    assert eligible_settings(folds, max_neg_jac_pct=0.1).to_dict() == {"a": True, "b": False, "c": False}
    assert select_setting(folds, methods=["b", "c"]).fallback.startswith("no setting has mean neg_jac_pct <= 0.1 %")


def test_when_every_setting_folds_too_much_the_least_folding_is_taken_and_flagged():
    # Dice would pick b, but when nothing meets the limit the fallback ranks by folding first
    df = _settings([("a", 0.80, 0.30, 0.3), ("b", 0.85, 0.50, 0.3), ("c", 0.78, 0.30, 0.2), ("d", 0.70, 0.20, 0.1)])
    choice = select_setting(df)
    assert choice == "d" and isinstance(choice, str)
    assert choice.fallback == ("no setting has mean neg_jac_pct <= 0.1 %: the one that folds least, 0.2 %, was taken; "
                               "widen the grid towards more regularisation")
    assert json.dumps({"selected": choice, "fallback": choice.fallback}).startswith('{"selected": "d", "fallback": "no')
    # among equal folding, the higher Dice wins: a (0.80) over c (0.78)
    assert select_setting(df, methods=["a", "b", "c"]) == "a"
    # a limit the setting meets is no fallback
    relaxed = select_setting(df, max_neg_jac_pct=0.6)
    assert relaxed == "b" and relaxed.fallback is None

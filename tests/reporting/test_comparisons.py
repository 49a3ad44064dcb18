"""Like-for-like comparison families and each family's answer, on hand-made metric tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from reporting_fixtures import rows, selections_and_tables

from featreg.errors import InputError
from featreg.reporting.comparisons import (
    best_line,
    comparison_families,
    family_answer,
    family_tests,
    forest_rows,
    method_table,
)
from featreg.reporting.tables import method_descriptors, table1_frame


def families_by_key(df, selections=()):
    return {f.key: f.pairs for f in comparison_families(df, "ncc", selections)}


def test_without_tuning_every_method_is_tested_against_the_baseline(metrics_df):
    assert families_by_key(metrics_df) == {"configured": (
        ("dinov2_cos", "ncc"), ("dinov2_cos_a0.3", "ncc"), ("dinov2_cos_a0.7", "ncc"), ("sam_l1", "ncc"))}
    with pytest.raises(InputError, match="baseline method 'mind' is not in the metrics table"):
        comparison_families(metrics_df, "mind")


def test_tuned_rows_are_only_tested_against_the_tuned_baseline(tmp_path):
    selections, _, test, _ = selections_and_tables(tmp_path)
    families = families_by_key(test, selections)
    assert families == {
        "paper": (("sam-l1-v2", "ncc"),),
        "tuned": (("sam-l1-v2@tuned", "ncc@tuned"),),
        "tuning": (("ncc@tuned", "ncc"), ("sam-l1-v2@tuned", "sam-l1-v2")),
    }
    with pytest.raises(InputError, match="test metrics lack method\\(s\\) of the tuning run: ncc@tuned"):
        comparison_families(test[test["method"] != "ncc@tuned"], "ncc", selections)
    with pytest.raises(InputError, match="the baseline 'ncc' has no selection record"):
        comparison_families(test, "ncc", selections[1:])


def test_distinct_paper_rows_form_their_own_family(tmp_path):
    selections, _, test, _ = selections_and_tables(tmp_path)
    for record in selections:  # the configured settings differ from the paper's: <method>@paper rows
        record["paper"] = f"{record['base']}@paper"
        copy = test[test["method"] == record["base"]].assign(method=record["paper"])
        test = pd.concat([test, copy], ignore_index=True)
    assert families_by_key(test, selections) == {
        "paper": (("sam-l1-v2@paper", "ncc@paper"),),
        "configured": (("sam-l1-v2", "ncc"),),
        "tuned": (("sam-l1-v2@tuned", "ncc@tuned"),),
        "tuning": (("ncc@tuned", "ncc"), ("sam-l1-v2@tuned", "sam-l1-v2")),
    }


def tuning_alone_table() -> pd.DataFrame:
    """Tuning lifts both methods by 0.05 in Dice; the feature method is no better than the baseline at
    either setting, so only a tuned-against-untuned test would call it better."""
    rng = np.random.default_rng(4)
    patients = range(121, 131)
    table = []
    for method, variant, encoder, dice in (("ncc", "baseline", "", 0.80), ("sam", "combined", "sam", 0.80),
                                           ("ncc@tuned", "baseline", "", 0.85), ("sam@tuned", "combined", "sam", 0.85)):
        table += rows(method, encoder, "l1" if encoder else "", variant, 0.3 if encoder else 0.0, dice, 0.3, 0.0,
                      patients, rng.normal(0, 0.01, 10))
    return pd.DataFrame(table)


def test_a_gain_from_tuning_alone_is_not_a_gain_of_the_method():
    test = tuning_alone_table()
    selections = [{"base": b, "tuned": f"{b}@tuned", "paper": b} for b in ("ncc", "sam")]
    families = comparison_families(test, "ncc", selections)
    tests = family_tests(test, families, n_resamples=500)
    for family in families:  # no tuned row against an untuned reference, except itself untuned
        for method, reference in family.pairs:
            assert not (method.endswith("@tuned") and not reference.endswith("@tuned")) or family.key == "tuning"
    tuned = tests[(tests["family"] == "tuned") & (tests["metric"] == "dice_mean")].iloc[0]
    assert tuned["p_holm"] > 0.05
    effect = tests[(tests["family"] == "tuning") & (tests["metric"] == "dice_mean")].set_index("method")
    # all ten differences positive: exact p = 2 / 2**10, Holm over the two tuned methods
    assert effect["p"].tolist() == pytest.approx([2 / 2**10] * 2)
    assert effect["p_holm"].tolist() == pytest.approx([2 * 2 / 2**10] * 2)
    assert effect.loc["sam@tuned", "mean_diff"] == pytest.approx(0.05, abs=0.01)
    variants = {"ncc": "baseline", "sam": "combined", "ncc@tuned": "baseline", "sam@tuned": "combined"}
    answers = {f.key: family_answer(tests, f, variants) for f in families}
    assert answers["tuned"].sentence == ("No feature-guided method beats ncc@tuned in mean Dice: sam@tuned is not "
                                         f"significantly different (Δ {answers['tuned'].best['mean_diff']:+.3f}).")
    assert answers["tuning"].sentence == ("Tuning improves mean Dice for 2 of 2 methods, worsens it for 0 and "
                                          "leaves 0 not significantly different.")
    table = method_table(tests, families[-1]).set_index("Method")
    low, high = effect.loc["ncc@tuned", ["ci_low", "ci_high"]]
    assert table.loc["ncc@tuned", "Dice 95 % CI"] == f"[{low:+.3f}, {high:+.3f}]"
    assert table.loc["ncc@tuned", ["Dice p (Holm)", "Dice verdict", "HD95 verdict"]].tolist() == [
        "0.004", "better", "better"]


def known_table() -> pd.DataFrame:
    """ncc and six methods whose verdict on 10 patients is known by construction.

    Every difference of one sign gives the exact two-sided Wilcoxon p = 2 / 2**10, Holm-adjusted at most
    6 × that = 0.012 (significant); the variant-2 differences alternate in sign with equal ranks on both
    sides (p ≈ 0.85). HD95 is 3 − Dice, so it follows Dice; %J≤0 is constant per method.
    """
    patients = range(121, 131)
    base = 0.80 + 0.01 * np.arange(10)
    pattern = np.array([0.01, -0.01, 0.02, -0.02, 0.03, -0.03, 0.04, -0.04, 0.05, -0.05])
    methods = [  # method, encoder, variant, Dice difference to ncc per patient, %J≤0
        ("ncc", "", "baseline", np.zeros(10), 0.5),
        ("mind-l1-v1", "mind", "feature", -0.10 - 0.001 * np.arange(10), 0.0),
        ("vit-l1-v1", "vit", "feature", -0.05 - 0.001 * np.arange(10), 0.0),
        ("mind-l1-v2", "mind", "combined", pattern + 0.002, 0.5),
        ("vit-l1-v2", "vit", "combined", pattern - 0.003, 0.5),
        ("vit-cosine-v2", "vit", "combined", pattern + 0.004, 0.5),
        ("elastix", "", "classical", 0.02 + 0.001 * np.arange(10), 1.0),
    ]
    table = []
    for method, encoder, variant, diff, neg in methods:
        table += rows(method, encoder, "l1" if encoder else "", variant, 0.3, 0.0, 0.4, neg, patients, base + diff)
    return pd.DataFrame(table)


def test_the_answer_and_its_counts_match_a_table_whose_truth_is_known():
    test = known_table()
    (family,) = comparison_families(test, "ncc")
    tests = family_tests(test, [family], n_resamples=200)
    answer = family_answer(tests, family, method_descriptors(test).set_index("method")["variant"].to_dict())
    assert answer.sentence == (
        "No feature-guided method beats ncc in mean Dice: both variant-1 (features only) methods are worse; "
        "all 3 variant-2 (features + image term) methods are within ±0.004 of ncc (none significantly different); "
        "elastix is better (Δ +0.025). elastix gains Dice only while folding significantly more (%J≤0 higher).")
    assert answer.counts.to_dict("records") == [
        {"metric": "Dice", "better": 1, "worse": 2, "not significant": 3},
        {"metric": "HD95", "better": 1, "worse": 2, "not significant": 3},
        {"metric": "%J≤0", "better": 2, "worse": 1, "not significant": 3},
    ]
    assert answer.best["method"] == "elastix"
    assert best_line(answer, 200).startswith(
        "Highest Δ mean Dice: elastix against ncc, Δ +0.025 (95 % CI [+0.02")
    assert best_line(answer, 200).endswith("unadjusted bootstrap), Holm-adjusted p 0.012, n = 10 pairs: better.")
    table = method_table(tests, family)
    assert table["Method"].tolist()[0] == "elastix" and table["Method"].tolist()[-2:] == ["vit-l1-v1", "mind-l1-v1"]
    assert table.set_index("Method").loc["vit-l1-v2", ["Dice Δ", "Dice verdict"]].tolist() == ["−0.003",
                                                                                              "not significant"]
    with pytest.raises(InputError, match=r"the variant of method\(s\) elastix is not known"):
        family_answer(tests, family, {m: "feature" for m in test["method"] if m != "elastix"})


def test_forest_rows_are_sorted_best_first_and_significant_by_the_holm_p():
    test = known_table()
    (family,) = comparison_families(test, "ncc")
    tests = family_tests(test, [family], n_resamples=0)
    dice, hd95 = forest_rows(tests, "dice_mean"), forest_rows(tests, "hd95_mean")
    assert dice["mean_diff"].is_monotonic_decreasing and hd95["mean_diff"].is_monotonic_increasing
    assert dice["method"].tolist() == hd95["method"].tolist()  # HD95 = 3 − Dice: the same order, best first
    assert dice["significant"].tolist() == dice["p_holm"].lt(0.05).tolist()
    # six patients, every difference positive: p = 2 / 64 < 0.05 unadjusted, Holm over two methods 0.0625
    few = test[test["patient"].isin([f"patient{k}" for k in range(121, 127)])
               & test["method"].isin(["ncc", "elastix", "mind-l1-v1"])]
    (family,) = comparison_families(few, "ncc")
    rows_ = forest_rows(family_tests(few, [family], n_resamples=0), "dice_mean").set_index("method")
    assert rows_.loc["elastix", "p"] == pytest.approx(2 / 64) and rows_.loc["elastix", "p_holm"] == pytest.approx(2 / 32)
    assert not rows_.loc["elastix", "significant"] and rows_.loc["elastix", "direction"] == 0


def test_a_family_too_small_to_reach_significance_says_so():
    test = tuning_alone_table()
    test = test[test["patient"].isin(["patient121", "patient122", "patient123"])
                & ~test["method"].str.endswith("@tuned")]
    test.loc[test["method"] == "sam", "dice_mean"] += 0.1
    (family,) = comparison_families(test, "ncc")
    answer = family_answer(family_tests(test, [family], n_resamples=0), family, {"sam": "combined"})
    assert answer.sentence == ("No method can be told apart from ncc here: with n = 3 pairs and 1 method, the "
                               "smallest Holm-adjusted p the exact Wilcoxon test can give is 0.25.")
    assert best_line(answer, 0).startswith("Highest Δ mean Dice: sam against ncc, Δ +0.1")
    assert "(no CI computed), Holm-adjusted p 0.250, n = 3 pairs: not significantly different." in best_line(answer, 0)


def test_encode_twins_form_a_family_of_their_own_and_table1_keeps_each_method_against_the_baseline():
    noise = np.random.default_rng(1).normal(0, 0.01, 8)
    patients = range(1, 9)
    table = pd.DataFrame(
        rows("initial", "", "", "initial", np.nan, 0.6, 0.0, 0.0, patients)
        + rows("ncc", "", "", "baseline", 0.0, 0.85, 0.3, 0.0, patients, noise)
        + rows("mind-cosine-v1", "mind", "cosine", "feature", 1.0, 0.80, 0.2, 0.0, patients, noise / 2)
        + rows("mind-cosine-v1-once", "mind", "cosine", "feature", 1.0, 0.75, 0.2, 0.0, patients, noise / 3)
        + rows("vgg16-cosine-v1-once", "vgg16", "cosine", "feature", 1.0, 0.78, 0.2, 0.0, patients, noise / 4))
    families = families_by_key(table)
    assert families["encode"] == (("mind-cosine-v1-once", "mind-cosine-v1"),)  # vgg16 has no twin
    assert ("mind-cosine-v1-once", "ncc") in families["configured"]
    # with the registration block encoding once, the plain name is the once row and -each its twin
    renamed = table.replace({"method": {"mind-cosine-v1": "mind-cosine-v1-each", "mind-cosine-v1-once": "mind-cosine-v1"}})
    assert families_by_key(renamed)["encode"] == (("mind-cosine-v1", "mind-cosine-v1-each"),)
    chosen = comparison_families(table, "ncc")
    tests = family_tests(table, chosen, n_resamples=0)
    answer = family_answer(tests, next(f for f in chosen if f.key == "encode"),
                           method_descriptors(table).set_index("method")["variant"].to_dict())
    assert answer.sentence.startswith("Encoding the moving image once, instead of every iteration, improves mean Dice "
                                      "for 0 of 1 method, worsens it for 1")
    frame = table1_frame(table, tests, "ncc").set_index("Method")
    assert frame.loc["mind-cosine-v1-once", "Tested against"] == "ncc (configured settings)"

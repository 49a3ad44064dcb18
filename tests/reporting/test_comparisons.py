"""Like-for-like comparison families and the plain verdict, on hand-made metric tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from reporting_fixtures import rows, selections_and_tables

from featreg.errors import InputError
from featreg.reporting.comparisons import comparison_families, family_tests, verdict


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
    paper, tuned_text, tuning = verdict(tests, families)
    assert tuned_text.startswith("At the tuned settings (each chosen on the validation split), against ncc@tuned "
                                 "(1 method): in mean Dice, not significantly different: sam@tuned (Δ ")
    assert "better: sam@tuned" not in tuned_text and "better" not in paper.split("HD95")[0]
    assert tuning.startswith("Effect of tuning, each method tuned against itself untuned (2 methods): in mean Dice, "
                             "tuning improved: ncc@tuned (Δ +0.0")
    low, high = effect.loc["ncc@tuned", ["ci_low", "ci_high"]]
    assert f"ncc@tuned (Δ {effect.loc['ncc@tuned', 'mean_diff']:+.3f} [{low:+.3f}, {high:+.3f}], n = 10)" in tuning
    assert "In HD95 (Δ in mm), tuning improved: ncc@tuned (Δ −0.0" in tuning


def test_a_dice_gain_that_folds_more_is_named_a_trade_off():
    test = tuning_alone_table()
    test = test[~test["method"].str.endswith("@tuned")].copy()
    sam = test["method"] == "sam"
    test.loc[sam, "dice_mean"] += 0.04
    test.loc[sam, "neg_jac_pct"] = 0.2 + np.linspace(0, 0.1, 10)
    families = comparison_families(test, "ncc")
    (text,) = verdict(family_tests(test, families, n_resamples=200), families)
    assert re.match(r"At the configured settings, against ncc \(1 method\): in mean Dice, better: "
                    r"sam \(Δ \+0\.0[345]\d \[\+0\.0\d\d, \+0\.0\d\d\], n = 10\)\.", text)
    assert "In %J≤0 (Δ in percentage points), worse: sam (Δ +0.250" in text
    assert text.endswith("sam gains Dice only while folding significantly more (%J≤0 higher): it trades accuracy "
                         "against smoothness, not a free gain.")


def test_a_family_too_small_to_reach_significance_says_so():
    test = tuning_alone_table()
    test = test[test["patient"].isin(["patient121", "patient122", "patient123"])
                & ~test["method"].str.endswith("@tuned")]
    test.loc[test["method"] == "sam", "dice_mean"] += 0.1
    families = comparison_families(test, "ncc")
    (text,) = verdict(family_tests(test, families, n_resamples=0), families)
    assert "in mean Dice, not significantly different: sam (Δ +0.1" in text
    assert text.endswith("With n = 3 pairs, the exact two-sided Wilcoxon test cannot give a Holm-corrected p below "
                         "0.25, so no difference can be significant here: 'not significantly different' says nothing.")
    assert "In %J≤0 (Δ in percentage points), not significantly different: sam (Δ 0.000, n = 3)." in text

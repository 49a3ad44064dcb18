"""The tuning parts of the report on hand-made selection records and metric tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from reporting_fixtures import make_metrics

from featreg.errors import InputError
from featreg.reporting.report import build_report
from featreg.reporting.tables import read_paper_table, reproduction_frame
from featreg.reporting.tuning import (
    pareto_metrics,
    read_selections,
    settings_labels,
    tuning_frame,
    verdict_frame,
)  # fmt: skip

RULE = {"metric": "dice_mean", "folding": "neg_jac_pct", "max_neg_jac_pct": 0.1, "ties": "..."}
# base, encoder, distance, variant, alpha, {lam: (Dice, sdlogJ, %J<=0)}
GRIDS = {
    "ncc": ("", "", "baseline", 0.0, {30.0: (0.84, 0.50, 0.30), 120.0: (0.83, 0.40, 0.05), 480.0: (0.78, 0.20, 0.0)}),
    "sam-l1-v2": ("sam", "l1", "combined", 0.3,
                  {30.0: (0.86, 0.45, 0.02), 120.0: (0.85, 0.47, 0.01), 480.0: (0.80, 0.25, 0.0)}),
}


def rows(method: str, encoder: str, distance: str, variant: str, alpha: float, dice: float, sdlogj: float,
         neg: float, patients: range, noise: np.ndarray | None = None) -> list[dict]:
    noise = np.zeros(len(patients)) if noise is None else noise
    return [{"method": method, "encoder": encoder, "distance": distance, "variant": variant, "alpha": alpha,
             "patient": f"patient{k:03d}", "status": "ok", "reason": "", "dice_mean": dice + e,
             **{f"dice_{c}": dice + e for c in ("RV", "Myo", "LV")},
             "hd95_mean": 3.0 - dice - e, "sdlogj": sdlogj, "neg_jac_pct": neg, "iterations": 20}
            for k, e in zip(patients, noise)]


def selections_and_tables(tmp_path):
    """Selection records (written to tmp_path), the validation table and the test table."""
    val, test, paths = [], [], []
    rng = np.random.default_rng(0)
    for base, (encoder, distance, variant, alpha, grid) in GRIDS.items():
        candidates = []
        for lam, (dice, sdlogj, neg) in grid.items():
            name = f"{base}@lam{lam:g}"
            val += rows(name, encoder, distance, variant, alpha, dice, sdlogj, neg, range(101, 106))
            candidates.append({"method": name, "values": {"lam": lam, "lr": 0.002}})
        eligible = {lam: v for lam, v in grid.items() if v[2] <= 0.1}
        lam = max(eligible, key=lambda k: eligible[k][0])
        record = {"base": base, "tuned": f"{base}@tuned", "paper": base, "rule": RULE,
                  "selected": f"{base}@lam{lam:g}", "values": {"lam": lam, "lr": 0.002}, "candidates": candidates,
                  "method": {"name": f"{base}@tuned"}}
        paths.append(tmp_path / f"{base}.json")
        paths[-1].write_text(json.dumps(record))
        shift = 0.03 if base != "ncc" else 0.0
        test += rows(base, encoder, distance, variant, alpha, 0.8, 0.4, 0.0, range(121, 131), rng.normal(0, 0.01, 10))
        test += rows(f"{base}@tuned", encoder, distance, variant, alpha, 0.8 + shift, 0.3, 0.0, range(121, 131),
                     rng.normal(0, 0.005, 10))
    test += rows("initial", "", "", "initial", np.nan, 0.6, 0.0, 0.0, range(121, 131))
    val += rows("initial", "", "", "initial", np.nan, 0.6, 0.0, 0.0, range(101, 106))
    return read_selections(paths), pd.DataFrame(val), pd.DataFrame(test), paths


def test_tuning_frame_marks_selection_eligibility_and_fronts(tmp_path):
    selections, val, _, _ = selections_and_tables(tmp_path)
    frame = tuning_frame(val, selections).set_index("method")
    assert list(frame.index) == ["ncc@lam30", "ncc@lam120", "ncc@lam480", "sam-l1-v2@lam30", "sam-l1-v2@lam120",
                                 "sam-l1-v2@lam480"]
    assert frame.loc["ncc@lam30", "lam"] == "30" and frame.loc["ncc@lam30", "n"] == 5
    assert frame["selected"].tolist() == [False, True, False, True, False, False]
    assert frame["eligible"].tolist() == [False, True, True, True, True, True]
    # ncc: each point trades Dice for smoothness, all on the front; sam λ 120 is dominated by λ 30 in sdlogJ
    assert frame.loc[frame["base"] == "ncc", "front_sdlogj"].all()
    assert frame.loc["sam-l1-v2@lam120", "front_sdlogj"] == False  # noqa: E712
    assert frame.loc["sam-l1-v2@lam120", "front_neg_jac"] == True  # noqa: E712  (folds less than λ 30)
    with pytest.raises(InputError, match="lack grid point\\(s\\) of ncc: ncc@lam30"):
        tuning_frame(val[val["method"] != "ncc@lam30"], selections)
    # a grid point that failed on one validation pair is not eligible, however good its survivors
    failed = (val["method"] == "ncc@lam480") & (val["patient"] == "patient103")
    val.loc[failed, ["status", "dice_mean", "neg_jac_pct"]] = ["failed", np.nan, np.nan]
    frame = tuning_frame(val, selections).set_index("method")
    assert frame["eligible"].tolist() == [False, True, False, True, True, True]
    assert frame.loc["ncc@lam480", "n"] == 4


def test_pareto_metrics_one_curve_per_method_across_lambda(tmp_path):
    selections, val, _, _ = selections_and_tables(tmp_path)
    points, order_by = pareto_metrics(val, selections)
    assert order_by == "lam" and "initial" not in set(points["method"])
    assert set(points["curve"]) == {"lr 0.002"} and set(points["base"]) == {"ncc", "sam-l1-v2"}
    assert points.loc[points["method"] == "ncc@lam480", "lam"].iloc[0] == 480.0


def test_verdict_against_the_tuned_baseline(tmp_path):
    selections, _, test, _ = selections_and_tables(tmp_path)
    verdict = verdict_frame(test, selections, "ncc", n_resamples=500)
    assert set(verdict["metric"]) == {"dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct"}
    dice = verdict[verdict["metric"] == "dice_mean"].iloc[0]
    assert dice["method"] == "sam-l1-v2@tuned" and dice["n_pairs"] == 10
    assert dice["mean_diff"] == pytest.approx(0.03, abs=0.01) and dice["ci_low"] > 0 and dice["p_holm"] < 0.01
    with pytest.raises(InputError, match="baseline 'mind' has no selection record"):
        verdict_frame(test, selections, "mind")
    with pytest.raises(InputError, match="test metrics lack tuned method\\(s\\): ncc@tuned"):
        verdict_frame(test[test["method"] != "ncc@tuned"], selections, "ncc")


def test_reproduction_lists_paper_and_tuned_rows_with_their_settings(tmp_path):
    selections, _, test, _ = selections_and_tables(tmp_path)
    labels = settings_labels(selections)
    assert labels == {"ncc": "paper settings", "ncc@tuned": "tuned: lam 120, lr 0.002",
                      "sam-l1-v2": "paper settings", "sam-l1-v2@tuned": "tuned: lam 30, lr 0.002"}
    frame = reproduction_frame(test, read_paper_table(), labels)
    sam = frame[frame["Paper row"] == "SAM / L1 + NCC"].set_index("featreg method")
    assert list(sam.index) == ["sam-l1-v2", "sam-l1-v2@tuned"]
    assert sam.loc["sam-l1-v2@tuned", "Settings"] == "tuned: lam 30, lr 0.002"
    assert sam.loc["sam-l1-v2", "DSC paper"] == "0.841 ± 0.059"
    assert frame.loc[frame["Paper row"] == "no encoder / initial", "featreg method"].tolist() == ["initial"]


def test_report_with_tuning_writes_verdict_fronts_and_selection(tmp_path):
    _, val, test, paths = selections_and_tables(tmp_path)
    test.to_csv(tmp_path / "metrics.csv", index=False)
    val.to_csv(tmp_path / "validation.csv", index=False)
    written = build_report(tmp_path / "metrics.csv", tmp_path / "out", validation_csv=tmp_path / "validation.csv",
                           selection_jsons=paths, n_resamples=200)
    assert {"tuning.csv", "verdict.csv", "pareto_validation.png", "reproduction.md"} <= set(written)
    html = (tmp_path / "out/report.html").read_text()
    assert "Verdict: tuned methods against the tuned ncc" in html and "Selected: ncc: lam 120, lr 0.002" in html
    assert "tuned: lam 30, lr 0.002" in (tmp_path / "out/reproduction.md").read_text()
    verdict = pd.read_csv(tmp_path / "out/verdict.csv")
    assert set(verdict["method"]) == {"sam-l1-v2@tuned"}


def test_report_needs_both_tuning_inputs(tmp_path):
    make_metrics().to_csv(tmp_path / "metrics.csv", index=False)
    from featreg.errors import ConfigError

    with pytest.raises(ConfigError, match="give both the validation metrics and the selection records"):
        build_report(tmp_path / "metrics.csv", tmp_path / "out", validation_csv=tmp_path / "metrics.csv")


def test_elastix_curve_runs_across_its_bending_weight():
    candidates = [{"method": f"elastix@it250_bw{w:g}", "values": {"iterations": 250, "bending_weight": w}}
                  for w in (0.1, 1.0)]
    val = pd.DataFrame([{"method": c["method"], "patient": "patient001", "dice_mean": 0.8, "sdlogj": 0.1,
                         "neg_jac_pct": 0.0} for c in candidates])
    points, order_by = pareto_metrics(val, [{"base": "elastix", "candidates": candidates}])
    assert order_by == "lam" and set(points["curve"]) == {"iterations 250"}
    assert sorted(points["lam"]) == [0.1, 1.0]

"""The tuning parts of the report on hand-made selection records and metric tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from reporting_fixtures import make_metrics, selections_and_tables

from featreg.errors import InputError
from featreg.reporting.report import build_report
from featreg.reporting.tables import read_paper_table, reproduction_frame
from featreg.reporting.tuning import (
    edge_warnings,
    grid_axes,
    grid_frame,
    pareto_metrics,
    settings_labels,
    tuning_frame,
)  # fmt: skip


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


def test_grid_frame_states_each_grid_and_warns_on_its_edges(tmp_path):
    selections, _, _, _ = selections_and_tables(tmp_path)
    grids = grid_frame(selections).set_index("method")
    assert grids.loc["ncc", "grid"] == "lam {30, 120, 480} × lr {0.002}" and grids.loc["ncc", "points"] == 3
    assert grids.loc["ncc", "selected"] == "lam 120, lr 0.002" and grids.loc["ncc", "edge"] == "none"
    # sam picked λ 30, the smallest; lr has one value, so it has no edge to lie on
    assert grids.loc["sam-l1-v2", "edge"] == "lam = 30 is the smallest of {30, 120, 480}"
    assert edge_warnings(grids.reset_index()) == [
        "sam-l1-v2: the selected lam = 30 is the smallest of {30, 120, 480}, so the grid was too narrow to know "
        "whether a value beyond it is better; widen the grid."]
    lattice = {"values": {"lattice": [32, 32]}, "base": "x",
               "candidates": [{"values": {"lattice": v}} for v in ([16, 16], [32, 32], [24, 24])]}
    assert grid_axes(lattice) == {"lattice": [[16, 16], [24, 24], [32, 32]]}


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
    assert {"tuning.csv", "statistics.csv", "pareto_validation.png", "reproduction.md"} <= set(written)
    html = (tmp_path / "out/report.html").read_text()
    # the answer first, one block per family, then each family's per-method verdict and Table 1
    headings = re.findall(r"<h2>(.*?)</h2>|<summary>(.*?)</summary>", html)
    assert [a or b for a, b in headings][:7] == [
        "Answer", "Caution", "Verdict per method: paper settings", "Verdict per method: tuned",
        "Verdict per method: tuning effect", "Table 1", "Accuracy against smoothness"]
    assert re.findall(r"<h3>(.*?)</h3>", html) == ["Paper settings: 1 method against ncc",
                                                   "Tuned: 1 method against ncc@tuned",
                                                   "Tuning effect: 2 methods against each method untuned"]
    assert {"forest_paper.png", "forest_tuned.png", "forest_tuning.png"} <= set(written)
    assert "<summary>Paired tests: tuned</summary>" in html
    assert "sam-l1-v2: the selected lam = 30 is the smallest of {30, 120, 480}" in html
    assert "<td>lam {30, 120, 480} × lr {0.002}</td>" in html
    assert "tuned: lam 30, lr 0.002" in (tmp_path / "out/reproduction.md").read_text()
    stats = pd.read_csv(tmp_path / "out/statistics.csv")
    tuned = stats[stats["family"] == "tuned"]
    assert set(tuned["method"]) == {"sam-l1-v2@tuned"} and set(tuned["reference"]) == {"ncc@tuned"}
    assert set(stats["family"]) == {"paper", "tuned", "tuning"}


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

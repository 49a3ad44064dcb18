"""Table layouts: summary.csv, the paper-style Table 1, the reproduction table."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from featreg.errors import InputError
from featreg.evaluation.metrics import DEFINITIONS
from featreg.reporting.comparisons import comparison_families, family_tests
from featreg.reporting.tables import PAPER_TABLE1, format_mean_std, metric_definitions, read_paper_table, reproduction_table, summary_table, table1_markdown
from featreg.evaluation.metrics_table import numeric_columns, patient_means


def test_summary_table_per_method(metrics_df):
    metrics_df.loc[(metrics_df["method"] == "ncc") & (metrics_df["patient"] == "patient121"), "hd95_mean"] = np.nan
    summary = summary_table(metrics_df).set_index("method")
    assert list(summary.index) == ["initial", "ncc", "dinov2_cos", "dinov2_cos_a0.3", "dinov2_cos_a0.7", "sam_l1"]
    assert summary.loc["ncc", "n_rows"] == 8 and summary.loc["ncc", "n_failed"] == 0
    assert summary.loc["ncc", "n_hd95_mean"] == 7 and summary.loc["ncc", "n_dice_mean"] == 8
    ncc = metrics_df[metrics_df["method"] == "ncc"]
    assert summary.loc["ncc", "mean_dice_mean"] == pytest.approx(ncc["dice_mean"].mean())
    assert summary.loc["ncc", "std_dice_mean"] == pytest.approx(ncc["dice_mean"].std(ddof=1))
    assert summary.loc["dinov2_cos", "encoder"] == "dinov2" and summary.loc["initial", "encoder"] == ""


def test_format_mean_std():
    assert format_mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"
    assert format_mean_std([1.0, 3.0, np.nan], n_expected=3) == "2.000 ± 1.414 (n = 2)"
    assert format_mean_std([np.nan]) == "–"


def test_table1_layout(metrics_df):
    metrics_df.loc[(metrics_df["method"] == "sam_l1") & (metrics_df["patient"] == "patient122"), "hd95_mean"] = np.nan
    tests = family_tests(metrics_df, comparison_families(metrics_df, "ncc"), n_resamples=0)
    text = table1_markdown(metrics_df, tests, baseline="ncc")
    header, table = text.split("\n\n", 1)
    assert "mean ± sample standard deviation" in header and "n counts the finite values" in header
    assert "Wilcoxon signed-rank" in header and "Holm" in header and "HD95" in header and "mm" in header
    lines = table.strip().splitlines()
    assert lines[0] == ("| Encoder | Variant | Method | DSC | HD95 (mm) | sdlogJ | %J≤0 | n | Tested against "
                        "| p DSC (Holm) | p HD95 (Holm) |")
    methods = [line.split(" | ")[2] for line in lines[2:]]
    assert methods == ["initial", "ncc", "dinov2_cos", "dinov2_cos_a0.3", "dinov2_cos_a0.7", "sam_l1"]
    rows = {line.split(" | ")[2]: line.split(" | ") for line in lines[2:]}
    assert rows["ncc"][0] == "| no encoder" and rows["ncc"][1] == "NCC" and rows["ncc"][-2:] == ["ref.", "ref. |"]
    assert rows["ncc"][8] == "reference (configured settings)" and rows["sam_l1"][8] == "ncc (configured settings)"
    assert rows["dinov2_cos_a0.3"][1] == "Cos + NCC (α = 0.3)" and rows["sam_l1"][1] == "L1"
    assert all(re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", cell) for cell in rows["ncc"][3:7])
    assert rows["sam_l1"][4].endswith("(n = 7)") and rows["sam_l1"][7] == "8"
    # all 8 differences share a sign: exact p = 2/256, Holm over the 4 registered methods other than ncc
    assert rows["dinov2_cos"][9] == f"{4 * 2 / 256:.3f}"
    assert rows["initial"][-3:] == ["not tested", "–", "– |"]  # the unregistered pair is not tested
    assert "each family is Holm-corrected on its own across its methods (configured settings: 4 method(s))" in header


def test_captions_quote_the_metrics_code():
    definitions = metric_definitions()
    assert set(definitions) == {"dice", "hd95", "sdlogj", "neg_jac_pct"}
    assert definitions["dice"] == f"DSC: {DEFINITIONS['dice']}"
    columns = numeric_columns(pd.DataFrame(columns=["patient", "dice_LA", "dice_RA", "dice_mean", "hd95_LA", "hd95_RA",
                                                    "hd95_mean", "hd95_empty", "sdlogj_heart", "seconds"]))
    assert columns == ["dice_LA", "dice_RA", "dice_mean", "hd95_LA", "hd95_RA", "hd95_mean", "sdlogj_heart", "seconds"]


def test_table1_unknown_baseline(metrics_df):
    tests = family_tests(metrics_df, comparison_families(metrics_df, "ncc"), n_resamples=0)
    with pytest.raises(InputError, match="baseline method 'mind' is not in the metrics table"):
        table1_markdown(metrics_df, tests, baseline="mind")


def test_paper_table_is_the_papers():
    paper = read_paper_table(PAPER_TABLE1)
    assert len(paper) == 14 and set(paper["source"]) == {"Kögl et al. MICCAI 2024 Table 1"}
    row = paper[(paper["encoder"] == "medsam") & (paper["distance"] == "cosine") & (paper["variant"] == "combined")]
    assert row[["dice_mean", "dice_std", "hd95_mean", "sdlogj_mean"]].iloc[0].tolist() == [0.845, 0.054, 1.765, 0.395]


def test_reproduction_table_maps_and_differs(metrics_df):
    metrics_df["encoder"] = metrics_df["encoder"].replace({"dinov2": "DINOv2"})  # names compare case-insensitively
    cos = metrics_df["method"] == "dinov2_cos"
    metrics_df.loc[cos, "dice_mean"] = 0.752  # paper: 0.742
    text = reproduction_table(metrics_df)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line.split("|") for line in text.splitlines()
            if line.startswith("| ") and "---" not in line}
    cells = [c.strip() for c in rows[("DINOv2 / Cos", "dinov2_cos")]]
    assert cells[4:7] == ["0.742 ± 0.108", "0.752 ± 0.000", "+0.010"]
    assert ("DINOv2 / Cos + NCC", "dinov2_cos_a0.3") in rows and ("DINOv2 / Cos + NCC", "dinov2_cos_a0.7") in rows
    assert ("MedSAM / L1", "not run") in rows and ("no encoder / NCC", "ncc") in rows
    assert "over all foreground pixels" in text and "std(log(J + |min J| + 1e-6))" in text
    assert "(encoder, distance, variant)" in text


def test_patient_means_average_each_patients_slices():
    def row(patient, slice_, dice, hd95, status="ok", reason="", empty=""):
        return {"method": "ncc", "encoder": "", "distance": "", "variant": "baseline", "alpha": 0.0,
                "patient": patient, "slice": slice_, "status": status, "reason": reason, "dice_mean": dice,
                "hd95_mean": hd95, "hd95_empty": empty, "seconds": 2.0}

    slices = pd.DataFrame([row("p1", 3, 0.8, 4.0), row("p1", 4, 0.6, np.nan, empty="RV"), row("p1", 5, 0.7, 6.0),
                           row("p2", 3, 0.9, 1.0), row("p2", 4, np.nan, np.nan, "failed", "diverged")])
    means = patient_means(slices).set_index("patient")
    assert "slice" not in means.columns and list(means["n_slices"]) == [3, 2]
    assert means.loc["p1", "dice_mean"] == pytest.approx(0.7) and means.loc["p1", "hd95_mean"] == pytest.approx(5.0)
    assert means.loc["p1", "status"] == "ok" and means.loc["p1", "hd95_empty"] == "RV"
    assert means.loc["p2", "status"] == "failed" and means.loc["p2", "reason"] == "diverged"
    assert np.isnan(means.loc["p2", "dice_mean"])  # one failed slice: the patient has no mean to compare
    one = slices.drop_duplicates("patient")
    assert patient_means(one).drop(columns="n_slices").equals(one)  # one pair per patient: unchanged

"""The report: one self-contained HTML file, and the ``featreg report`` command."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from reporting_fixtures import write_pair, write_result

from featreg.cli import main
from featreg.errors import InputError
from featreg.reporting.comparisons import comparison_families, family_tests
from featreg.reporting.cost import pair_seconds, read_seconds
from featreg.reporting.html import Section, write_report
from featreg.reporting.report import build_report
from featreg.reporting.tables import table1_frame


def test_write_report_is_self_contained(tmp_path, metrics_df):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    out = write_report(tmp_path / "r.html", [
        Section("A figure", "figure", png, "caption <one>"),
        Section("A table", "table", pd.DataFrame({"a": [1]}), "caption two"),
        Section("Text", "text", "para 1\n\npara <2>", css_class="verdict"),
        Section("Long <table>", "table", pd.DataFrame({"b": [2]}), "caption three", collapsed=True),
        Section("Block", "block", [Section("Part", "text", "inner"), Section("", "text", "untitled")],
                css_class="answer"),
    ])
    text = out.read_text()
    assert '<section class="verdict"><h2>Text</h2>' in text
    assert "<details><summary>Long &lt;table&gt;</summary><div class=\"scroll\">" in text
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in text
    assert "<figcaption>caption &lt;one&gt;</figcaption>" in text and "caption two" in text
    assert "<p>para &lt;2&gt;</p>" in text
    assert ('<section class="answer"><h2>Block</h2><section><h3>Part</h3><p>inner</p></section>'
            "<section><p>untitled</p></section></section>") in text
    with pytest.raises(ValueError, match="a figure needs a caption"):
        Section("bare", "figure", png)


def test_build_report_with_results(tmp_path, metrics_df):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_df.to_csv(metrics_csv, index=False)
    patients = sorted(metrics_df["patient"].unique())
    for patient in patients[:2]:
        write_pair(tmp_path / "pairs", patient)
        for method, scale in (("ncc", 1.0), ("dinov2_cos", 2.0), ("sam_l1", 0.5), ("dinov2_cos_a0.3", 1.5)):
            write_result(tmp_path / "results", method, patient, scale)
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny-test\n")
    out = tmp_path / "report"
    written = build_report(metrics_csv, out, pairs_dir=tmp_path / "pairs", results_dir=tmp_path / "results",
                           config=config, n_resamples=200)
    expected = {"summary.csv", "statistics.csv", "table1.md", "reproduction.md", "dice_boxplot.png", "pareto.png",
                "alpha_curve.png", "jacobian_maps.png", "qualitative.png", "forest_configured.png", "cost.png",
                "report.html"}
    assert expected <= set(written)
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    figures = re.findall(r"<figure>.*?</figure>", html, flags=re.DOTALL)
    assert len(figures) == html.count("data:image/png;base64,") == sum(n.endswith(".png") for n in written)
    assert all("<figcaption>" in f for f in figures)
    # the counts of the answer, the per-method verdict, Table 1, the paired tests of the one family, reproduction
    assert html.count('class="caption"') == 5
    assert "<summary>Paired tests: configured settings</summary>" in html
    assert "tiny.yaml (tiny-test)" in html and "Device: cpu" in html and "Iterations per registration: 1500" in html
    # no tuning run: nothing is selected on the test metrics, and the panel shows the baseline
    assert "Selected setting" not in html and "Selected:" not in html
    assert "One pair (n = 1) under the baseline ncc" in html and "(n = 1 pair; the first patient, sorted," in html
    stats = pd.read_csv(out / "statistics.csv")
    assert set(stats["metric"]) == {"dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct"}
    assert set(stats["method"]) == {"dinov2_cos", "dinov2_cos_a0.3", "dinov2_cos_a0.7", "sam_l1"}  # no initial
    assert set(stats["family"]) == {"configured"} and set(stats["reference"]) == {"ncc"}


def test_the_answer_opens_the_report_before_any_table(tmp_path, metrics_df):
    metrics_df.to_csv(tmp_path / "metrics.csv", index=False)
    build_report(tmp_path / "metrics.csv", tmp_path / "out", n_resamples=100)
    html = (tmp_path / "out/report.html").read_text()
    body = html[html.index("<body>"):]
    assert body.index("<h2>Answer</h2>") < body.index("<table")
    assert '<section class="family"><h3>Configured settings: 4 methods against ncc</h3>' in html
    answer = body[body.index("<h2>Answer</h2>"):body.index("<h2>Verdict per method: configured settings</h2>")]
    assert answer.count("data:image/png;base64,") == 1  # the forest plot; no cost figure without --results
    assert 'alt="Forest plots, one per metric: ' in answer
    assert "feature-guided method" in answer and "Highest Δ mean Dice: " in answer
    assert "unadjusted percentile-bootstrap 95 % CI (100 resamples, seed 0)" in html


def test_seconds_per_pair_is_the_mean_of_the_run_json_files(tmp_path, metrics_df):
    metrics_df.to_csv(tmp_path / "metrics.csv", index=False)
    patients = sorted(metrics_df["patient"].unique())
    results = tmp_path / "results"
    ncc = {patients[0]: 1.0, patients[1]: 2.0, patients[2]: 6.0}
    for patient, seconds in ncc.items():
        write_result(results, "ncc", patient, 1.0, seconds=seconds)
    for k, seconds in enumerate((0.5, 1.5)):  # one patient with a pair per slice: each slice counts
        write_result(results, "sam_l1", patients[0], 1.0, seconds=seconds, pair=f"slice{k:02d}")
    write_result(results, "sam_l1", patients[1], 1.0, seconds=4.0)
    failed = json.loads((results / "sam_l1" / patients[1] / "run.json").read_text()) | {"status": "failed"}
    (results / "sam_l1" / patients[1] / "run.json").write_text(json.dumps(failed))  # its time is left out
    write_result(results, "ncc@lam30", patients[0], 1.0, seconds=99.0)  # a grid run, not in metrics.csv
    read = read_seconds(results)
    assert sorted(read["pair"]) == sorted([*ncc, f"{patients[0]}/slice00", f"{patients[0]}/slice01", patients[1],
                                           patients[0]])
    families = comparison_families(metrics_df, "ncc")
    tests = family_tests(metrics_df, families, n_resamples=0)
    table = table1_frame(metrics_df, tests, "ncc", pair_seconds(read, metrics_df)).set_index("Method")
    ncc_cell = f"{np.mean([1, 2, 6]):.2f} ± {np.std([1, 2, 6], ddof=1):.2f} (n = 3)"
    assert table.loc["ncc", "s / pair"] == ncc_cell
    assert table.loc["sam_l1", "s / pair"] == f"1.00 ± {np.std([0.5, 1.5], ddof=1):.2f} (n = 2)"
    assert table.loc["ncc", "Device"] == "cpu" and table.loc["dinov2_cos", ["s / pair", "Device"]].tolist() == [
        "–", "–"]
    build_report(tmp_path / "metrics.csv", tmp_path / "out", results_dir=results, n_resamples=0)
    markdown = (tmp_path / "out/table1.md").read_text()
    assert "| s / pair | Device |" in markdown and f"| {ncc_cell} | cpu |" in markdown
    assert "cost.png" in {p.name for p in (tmp_path / "out").iterdir()}


def test_report_figure_patient_and_devices_of_the_metrics_rows(tmp_path, metrics_df, caplog):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_df.to_csv(metrics_csv, index=False)
    patients = sorted(metrics_df["patient"].unique())
    for patient in patients[:2]:
        write_pair(tmp_path / "pairs", patient)
        write_result(tmp_path / "results", "ncc", patient, 1.0)
    write_result(tmp_path / "results", "sam_l1", patients[1], 0.5)
    (tmp_path / "results/sam_l1" / patients[1] / "run.json").write_text('{"device": "cu')  # truncated
    write_result(tmp_path / "results", "ncc@lam30", patients[0], 1.0)  # a grid run, not in metrics.csv
    (tmp_path / "results/ncc@lam30" / patients[0] / "run.json").write_text('{"device": "cuda:7"}')
    options = {"pairs_dir": tmp_path / "pairs", "results_dir": tmp_path / "results", "n_resamples": 0}
    with caplog.at_level("WARNING"):
        build_report(metrics_csv, tmp_path / "out", figure_patient=patients[1], **options)
    html = (tmp_path / "out/report.html").read_text()
    assert "Device: cpu, unknown." in html and "cuda:7" not in html
    assert f"device of sam_l1/{patients[1]} unknown" in caplog.text
    maps, panel = (re.search(f"<h2>{title}</h2>.*?</figcaption>", html, flags=re.DOTALL).group(0)
                   for title in ("Jacobian determinant maps", "Qualitative result"))
    assert f"on {patients[1]} (n = 1 pair; given by figures.patient) for ncc, sam_l1;" in maps
    assert f"under the baseline ncc: {patients[1]} (given by figures.patient)" in panel
    with pytest.raises(InputError, match=f"patient {patients[2]}, file .*: the figure patient .* no displacement"):
        build_report(metrics_csv, tmp_path / "out", figure_patient=patients[2], **options)
    with pytest.raises(InputError, match="patient patient999, .* has no rows in the metrics table"):
        build_report(metrics_csv, tmp_path / "out", figure_patient="patient999", **options)


def write_config(folder, **entries):
    """An experiment config holding what the report reads (baseline ncc unless given)."""
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"name": "test", "baseline": "ncc"} | entries))
    return path


def test_cli_report_without_results(tmp_path, metrics_df, caplog):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_df.to_csv(metrics_csv, index=False)
    out = tmp_path / "out"
    config = write_config(tmp_path, alpha_sweep={"encoder": "dinov2", "distance": "cosine", "alphas": [0.5]},
                          figures={"patient": "patient122"})
    with caplog.at_level("INFO"):
        assert main(["report", "--metrics", str(metrics_csv), "--config", str(config), "--out-dir", str(out),
                     "--bootstrap", "100"]) == 0
    assert (out / "report.html").is_file() and (out / "table1.md").is_file()
    assert not (out / "jacobian_maps.png").exists()
    assert "skipped: no results folder given" in caplog.text


def test_report_lists_failed_pairs_with_their_reason(tmp_path, metrics_df):
    failed = metrics_df.index[metrics_df["method"] != "initial"][0]
    metrics_df.loc[failed, ["status", "reason", "dice_mean"]] = ["failed", "loss became NaN at iteration 7", float("nan")]
    metrics_csv = tmp_path / "metrics.csv"
    metrics_df.to_csv(metrics_csv, index=False)
    build_report(metrics_csv, tmp_path / "out", n_resamples=0)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Failed pairs" in html and "loss became NaN at iteration 7" in html
    assert metrics_df.loc[failed, "patient"] in html


def test_cli_report_errors(tmp_path, metrics_df, capsys):
    metrics_csv = tmp_path / "metrics.csv"
    metrics_df.to_csv(metrics_csv, index=False)
    def report(config, metrics=metrics_csv):
        return main(["report", "--metrics", str(metrics), "--config", str(config), "--out-dir", str(tmp_path)])

    assert report(write_config(tmp_path, baseline="mind")) == 2
    assert "baseline method 'mind' is not in the metrics table" in capsys.readouterr().err
    assert report(write_config(tmp_path), tmp_path / "no.csv") == 2
    assert "metrics table is missing" in capsys.readouterr().err
    assert report(write_config(tmp_path, alpha_sweep={"encoder": "x"})) == 2
    assert "alpha_sweep needs an encoder and a distance" in capsys.readouterr().err
    assert report(write_config(tmp_path, figures={"patient": "patient999"})) == 2
    assert "patient patient999" in capsys.readouterr().err
    assert report(tmp_path / "none.yaml") == 2
    assert "config file" in capsys.readouterr().err

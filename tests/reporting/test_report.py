"""The report: one self-contained HTML file, and the ``featreg report`` command."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import yaml
from reporting_fixtures import write_pair, write_result

from featreg.cli import main
from featreg.errors import InputError
from featreg.reporting.html import Section, write_report
from featreg.reporting.report import build_report


def test_write_report_is_self_contained(tmp_path, metrics_df):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    out = write_report(tmp_path / "r.html", [
        Section("A figure", "figure", png, "caption <one>"),
        Section("A table", "table", pd.DataFrame({"a": [1]}), "caption two"),
        Section("Text", "text", "para 1\n\npara <2>", css_class="verdict"),
        Section("Long <table>", "table", pd.DataFrame({"b": [2]}), "caption three", collapsed=True),
    ])
    text = out.read_text()
    assert '<section class="verdict"><h2>Text</h2>' in text
    assert "<details><summary>Long &lt;table&gt;</summary><div class=\"scroll\">" in text
    assert "data:image/png;base64,iVBORw0KGgpmYWtl" in text
    assert "<figcaption>caption &lt;one&gt;</figcaption>" in text and "caption two" in text
    assert "<p>para &lt;2&gt;</p>" in text
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
                "alpha_curve.png", "jacobian_maps.png", "qualitative.png", "report.html"}
    assert expected <= set(written)
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "<script" not in html
    figures = re.findall(r"<figure>.*?</figure>", html, flags=re.DOTALL)
    assert len(figures) == html.count("data:image/png;base64,") == sum(n.endswith(".png") for n in written)
    assert all("<figcaption>" in f for f in figures)
    assert html.count('class="caption"') == 3  # Table 1, the paired tests of the one family, reproduction
    assert "<summary>Paired tests: configured settings</summary>" in html
    assert "tiny.yaml (tiny-test)" in html and "Device: cpu" in html and "Iterations per registration: 1500" in html
    # no tuning run: nothing is selected on the test metrics, and the panel shows the baseline
    assert "Selected setting" not in html and "Selected:" not in html
    assert "One pair (n = 1) under the baseline ncc" in html and "(n = 1 pair; the first patient, sorted," in html
    stats = pd.read_csv(out / "statistics.csv")
    assert set(stats["metric"]) == {"dice_mean", "hd95_mean", "sdlogj", "neg_jac_pct"}
    assert set(stats["method"]) == {"dinov2_cos", "dinov2_cos_a0.3", "dinov2_cos_a0.7", "sam_l1"}  # no initial
    assert set(stats["family"]) == {"configured"} and set(stats["reference"]) == {"ncc"}


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

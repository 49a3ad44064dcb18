"""Figures decode as PNGs of a sensible size; inputs are checked."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest
from reporting_fixtures import write_pair, write_result

from featreg.data.nifti import read_displacement
from featreg.errors import InputError
from featreg.reporting import figures
from featreg.reporting.comparisons import comparison_families, family_tests, forest_rows


def _assert_png(path: Path, min_side: int = 200) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 0.01  # not a blank canvas


def test_dice_boxplot_and_pareto(metrics_df, tmp_path):
    _assert_png(figures.dice_boxplot(metrics_df, tmp_path / "box.png"))
    _assert_png(figures.pareto_plot(metrics_df, tmp_path / "pareto.png"))


def test_alpha_curve(metrics_df, tmp_path):
    curve = figures.alpha_family(metrics_df, encoder="dinov2", distance="cosine")
    assert sorted(curve["alpha"]) == [0.0, 0.3, 0.7, 1.0]
    _assert_png(figures.alpha_curve(metrics_df, tmp_path / "alpha.png", encoder="dinov2", distance="cosine"))
    with pytest.raises(InputError, match="no feature or combined methods with encoder 'sam' and distance 'cosine'"):
        figures.alpha_family(metrics_df, encoder="sam", distance="cosine")
    dup = metrics_df.copy()
    dup.loc[dup["method"] == "dinov2_cos_a0.7", "alpha"] = 0.3
    with pytest.raises(InputError, match="several methods share an α"):
        figures.alpha_family(dup, encoder="dinov2", distance="cosine")
    # a tuned row and an encode-once twin share their method's α and stay off the curve
    twins = pd.concat([metrics_df, *(metrics_df[metrics_df["method"] == "dinov2_cos"].assign(method=name)
                                     for name in ("dinov2_cos@tuned", "dinov2_cos-once"))])
    assert figures.alpha_family(twins, encoder="dinov2", distance="cosine").equals(curve)


def test_jacobian_maps_and_displacement_layout(tmp_path):
    for method, scale in (("ncc", 1.0), ("dinov2_cos", 2.0)):
        write_result(tmp_path, method, "patient121", scale)
    u, spacing = read_displacement(tmp_path / "ncc" / "patient121" / "displacement.nii.gz")
    assert u.shape == (2, 32, 32) and spacing == (1.8, 1.8)  # rounded from float32 pixdim
    _assert_png(figures.jacobian_maps(tmp_path, ["ncc", "dinov2_cos"], "patient121", tmp_path / "jac.png"))
    with pytest.raises(InputError, match="file is missing"):
        figures.jacobian_maps(tmp_path, ["sam_l1"], "patient121", tmp_path / "none.png")


def test_qualitative_panel(tmp_path):
    pair = write_pair(tmp_path / "pairs", "patient121")
    result = write_result(tmp_path / "results", "ncc", "patient121", 1.0)
    out = figures.qualitative_panel(pair, result, tmp_path / "panel.png",
                                    before={"dice": 0.62, "hd95": 7.1}, after={"dice": 0.86, "hd95": 1.3})
    _assert_png(out)


def test_forest_and_cost_plots(metrics_df, tmp_path):
    (family,) = comparison_families(metrics_df, "ncc")
    tests = family_tests(metrics_df, [family], n_resamples=100)
    panels = [(metric, forest_rows(tests, metric)) for metric in ("dice_mean", "hd95_mean", "neg_jac_pct")]
    _assert_png(figures.forest_plot(panels, tmp_path / "forest.png"), min_side=150)  # four rows: a wide strip
    points = pd.DataFrame({"method": ["a", "b", "c"], "seconds": [1.0, 10.0, 0.0], "dice": [0.8, 0.85, 0.9]})
    _assert_png(figures.cost_plot(points, tmp_path / "cost.png"))
    with pytest.raises(InputError, match="no method has both a mean Dice and a positive mean seconds per pair"):
        figures.cost_plot(points.assign(seconds=float("nan")), tmp_path / "none.png")

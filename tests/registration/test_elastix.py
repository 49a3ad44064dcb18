"""elastix B-spline registration: its conventions against featreg's sampler, recovery, settings checks.

Real elastix (itk-elastix) on small images: a 64×56 pair with anisotropic spacing,
so a swapped axis, a swapped spacing or a reversed component cannot go unnoticed.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from featreg.errors import ConfigError
from featreg.registration.bspline import lattice_size
from featreg.registration.elastix import (
    DEFAULT_GRID_SPACING_MM,
    ElastixSettings,
    parameter_maps,
    register_elastix,
)
from featreg.registration.sampling import warp_image
from featreg.registration.units import displacement_from_mm

from registration_helpers import smooth_field_px, textured

SHAPE = (64, 56)
SPACING = (1.8, 1.5)  # mm along array axes 0 and 1
SETTINGS = ElastixSettings(grid_spacing_mm=12.0, resolutions=2, iterations=200, bending_weight=0.1)


def sampler_warp(moving: np.ndarray, displacement_mm: np.ndarray, spacing=SPACING) -> np.ndarray:
    """featreg's bilinear warp M(x + u(x)) of a numpy image by a field in mm."""
    field = torch.from_numpy(displacement_from_mm(displacement_mm, spacing))[None]
    return warp_image(torch.from_numpy(moving)[None, None], field)[0, 0].numpy()


def inside_moving(displacement_mm: np.ndarray, spacing=SPACING) -> np.ndarray:
    """Pixels whose sample point x + u(x) lies in the moving image as ITK sees it.

    An ITK image extends half a pixel beyond its first and last pixel centres; there
    its linear interpolator repeats the border pixel, as featreg's sampler does, and
    elastix writes 0 (DefaultPixelValue) beyond.
    """
    index = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"))
    point = index + displacement_mm / np.reshape(spacing, (2, 1, 1))
    return np.all((point >= -0.5) & (point <= np.reshape(SHAPE, (2, 1, 1)) - 0.5), axis=0)


@pytest.fixture(scope="module")
def known():
    """(fixed, moving, true field in mm) with fixed(x) = moving(x + u(x)) exactly (analytic images)."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")).astype(np.float64)
    u_px = smooth_field_px(SHAPE, amplitude=1.5, seed=3)
    return textured(index + u_px), textured(index), (u_px * np.reshape(SPACING, (2, 1, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def registered(known):
    fixed, moving, _ = known
    return register_elastix(fixed, moving, SPACING, SETTINGS, threads=1)


def test_featreg_sampler_with_the_returned_field_reproduces_elastix_result_image(known, registered):
    _, moving, _ = known
    inside = inside_moving(registered.displacement_mm)
    assert registered.displacement_mm.shape == (2, *SHAPE) and registered.warped.shape == SHAPE
    assert inside.mean() > 0.9
    assert np.abs(registered.displacement_mm).max() > 1.0  # mm: elastix moved the image, the test is not trivial
    ours = sampler_warp(moving, registered.displacement_mm)
    # Both are bilinear interpolations of the same image at the same points, in float32: elastix
    # stores the field as float32, so points agree to ~1e-5 px and intensities (gradient < 0.3 per px,
    # values in [0, 1]) to well below 1e-5. A swapped axis or spacing gives differences of ~0.1.
    np.testing.assert_allclose(ours[inside], registered.warped[inside], rtol=0, atol=1e-5)
    assert np.all(registered.warped[~inside] == 0)


def test_a_known_smooth_deformation_is_recovered(known, registered):
    _, _, truth = known
    core = (slice(8, -8), slice(8, -8))  # the border's control points see few pixels
    error_px = np.linalg.norm((registered.displacement_mm - truth) / np.reshape(SPACING, (2, 1, 1)), axis=0)[core]
    true_px = np.linalg.norm(truth / np.reshape(SPACING, (2, 1, 1)), axis=0)[core]
    assert true_px.mean() > 1.0
    assert error_px.mean() <= 0.25 * true_px.mean()  # the bar featreg's FFD meets (test_optimize.py)
    assert np.percentile(error_px, 95) < 0.6


def test_threads_do_not_change_the_result(known, registered):
    fixed, moving, _ = known
    again = register_elastix(fixed, moving, SPACING, SETTINGS, threads=2)
    np.testing.assert_array_equal(again.displacement_mm, registered.displacement_mm)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metric": "NormalizedCorrelation"}, "elastix metric must be one of ['AdvancedNormalizedCorrelation', "
         "'AdvancedMeanSquares', 'AdvancedMattesMutualInformation'], got 'NormalizedCorrelation'"),
        ({"grid_spacing_mm": -4.0}, "elastix grid_spacing_mm must be a number > 0, got -4.0"),
        ({"bending_weight": -0.1}, "elastix bending_weight must be a number >= 0, got -0.1"),
        ({"iterations": 0}, "elastix iterations must be an integer >= 1, got 0"),
        ({"resolutions": 1.5}, "elastix resolutions must be an integer >= 1, got 1.5"),
        ({"sampler": "grid"}, "elastix sampler must be one of ['random', 'full'], got 'grid'"),
        ({"lam": 1.0}, "unknown elastix setting(s): lam; known: metric, bending_weight, grid_spacing_mm, "
         "resolutions, iterations, spatial_samples, sampler, seed"),
    ],
)
def test_bad_settings_are_refused_with_their_message(values, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        ElastixSettings.from_dict(values)


def test_parameter_maps_follow_the_settings():
    (plain,) = parameter_maps(ElastixSettings(resolutions=3, sampler="full"))
    assert plain["Registration"] == ["MultiResolutionRegistration"]
    assert plain["Metric"] == ["AdvancedNormalizedCorrelation"] and "Metric1Weight" not in plain
    assert plain["GridSpacingSchedule"] == ["4", "2", "1"] and plain["ImageSampler"] == ["Full"]
    (penalised,) = parameter_maps(ElastixSettings(bending_weight=0.5, iterations=7))
    assert penalised["Metric"] == ["AdvancedNormalizedCorrelation", "TransformBendingEnergyPenalty"]
    assert penalised["Metric1Weight"] == ["0.5"] and penalised["MaximumNumberOfIterations"] == ["7"]
    assert penalised["Registration"] == ["MultiMetricMultiResolutionRegistration"]


def test_default_grid_spacing_is_featreg_default_lattice():
    count, spacing_px = lattice_size(128, count=24, order=3)
    assert DEFAULT_GRID_SPACING_MM == pytest.approx(spacing_px * 1.8)


def test_registration_writes_no_file_into_the_working_directory(known, tmp_path, monkeypatch):
    fixed, moving, _ = known
    monkeypatch.chdir(tmp_path)
    register_elastix(fixed, moving, SPACING, ElastixSettings(resolutions=1, iterations=5))
    assert list(tmp_path.iterdir()) == []

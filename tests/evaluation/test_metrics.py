"""Metrics on hand-built masks and analytic fields with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from featreg.evaluation.metrics import (
    DEFINITIONS,
    METRIC_COLUMNS,
    boundary,
    dice,
    dice_per_class,
    evaluate_arrays,
    hd95,
    hd95_per_class,
    jacobian_determinant,
    neg_jac_pct,
    sdlogj,
)


def square(shape, x0, y0, n, m=None):
    mask = np.zeros(shape, dtype=bool)
    mask[x0 : x0 + n, y0 : y0 + (m or n)] = True
    return mask


# ---- Dice -------------------------------------------------------------------


def test_dice_known_overlap():
    a = square((10, 10), 0, 0, 4)  # 16 px
    b = square((10, 10), 2, 0, 4)  # 16 px, overlap rows 2-3: 8 px
    assert dice(a, b) == pytest.approx(2 * 8 / 32)
    assert dice(a, a) == 1.0


def test_dice_one_empty_is_zero_both_empty_is_nan():
    a = square((6, 6), 1, 1, 2)
    empty = np.zeros((6, 6), dtype=bool)
    assert dice(a, empty) == 0.0
    assert dice(empty, a) == 0.0
    assert math.isnan(dice(empty, empty))


def test_dice_rejects_non_boolean_and_shape_mismatch():
    with pytest.raises(ValueError, match="boolean masks, got dtypes uint8 and bool"):
        dice(np.zeros((3, 3), np.uint8), np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match=r"same shape, got \(3, 3\) and \(3, 4\)"):
        dice(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_dice_per_class_and_mean_over_defined_classes():
    ref = np.zeros((10, 10), np.uint8)
    pred = np.zeros((10, 10), np.uint8)
    ref[0:4, 0:4] = 1  # RV 16 px
    pred[2:6, 0:4] = 1  # RV 16 px, overlap 8 -> 0.5
    ref[6:8, 6:8] = 3  # LV 4 px
    pred[6:8, 6:8] = 3  # LV identical -> 1.0
    # Myo absent from both -> NaN, excluded from the mean
    scores = dice_per_class(pred, ref)
    assert list(scores) == ["RV", "Myo", "LV", "mean"]
    assert scores["RV"] == pytest.approx(0.5)
    assert math.isnan(scores["Myo"])
    assert scores["LV"] == 1.0
    assert scores["mean"] == pytest.approx(0.75)


# ---- HD95 -------------------------------------------------------------------


@pytest.mark.parametrize("axis, k, spacing, expected", [(0, 3, (1.5, 0.7), 4.5), (1, 4, (1.5, 0.7), 2.8)])
def test_hd95_parallel_lines_offset_by_k_pixels(axis, k, spacing, expected):
    # Every boundary pixel of one line is k pixels (k * spacing[axis] mm) from the other line.
    a = np.zeros((20, 20), dtype=bool)
    if axis == 0:
        a[5, 3:15] = True
        b = np.roll(a, k, axis=0)
    else:
        a[3:15, 5] = True
        b = np.roll(a, k, axis=1)
    assert hd95(a, b, spacing) == pytest.approx(expected)


def test_hd95_interpolates_the_95th_percentile_and_takes_the_larger_direction():
    # pred = ref (19 px line) + one outlier 20 rows away: pred->ref distances are
    # 19 zeros and 20 * 1.5 = 30 mm; the linear 95th percentile of 20 sorted values
    # sits at index 19 * 0.95 = 18.05 -> 0.05 * 30 = 1.5 mm. ref->pred is all 0.
    ref = np.zeros((40, 30), dtype=bool)
    ref[10, 0:19] = True
    pred = ref.copy()
    pred[30, 5] = True
    assert hd95(pred, ref, (1.5, 0.8)) == pytest.approx(1.5)
    assert hd95(ref, pred, (1.5, 0.8)) == pytest.approx(1.5)


def test_boundary_of_filled_square_is_its_ring_and_image_border_counts_as_outside():
    mask = square((8, 8), 2, 2, 4)
    ring = mask.copy()
    ring[3:5, 3:5] = False
    np.testing.assert_array_equal(boundary(mask), ring)
    full = np.ones((4, 4), dtype=bool)
    inner = np.zeros((4, 4), dtype=bool)
    inner[1:3, 1:3] = True
    np.testing.assert_array_equal(boundary(full), full & ~inner)


def test_hd95_of_identical_masks_is_zero_and_empty_is_nan():
    a = square((12, 12), 2, 3, 5)
    empty = np.zeros_like(a)
    assert hd95(a, a, (1.0, 2.0)) == 0.0
    assert math.isnan(hd95(a, empty, (1.0, 2.0)))
    assert math.isnan(hd95(empty, a, (1.0, 2.0)))
    assert math.isnan(hd95(empty, empty, (1.0, 2.0)))


def test_hd95_rejects_bad_spacing():
    a = square((5, 5), 1, 1, 2)
    with pytest.raises(ValueError, match=r"spacing must be 2 positive finite values in mm, got \(1.0, 0.0\)"):
        hd95(a, a, (1.0, 0.0))
    with pytest.raises(ValueError, match="spacing must be 2 positive"):
        hd95(a, a, (1.0,))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_hd95_equals_monai_on_random_masks_with_anisotropic_spacing():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    from scipy import ndimage

    rng = np.random.default_rng(1234)
    for trial in range(24):
        shape = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
        pred = rng.random(shape) < 0.3
        if trial % 2:  # blobs as well as speckle; some touch the image border
            pred = ndimage.binary_opening(rng.random(shape) < 0.55)
        ref = ndimage.binary_dilation(rng.random(shape) < 0.05, iterations=int(rng.integers(0, 3)) or 1)
        spacing = (float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.5, 3.0)))
        assert pred.any() and ref.any()
        expected = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(pred)[None, None],
            torch.from_numpy(ref)[None, None],
            include_background=True,
            percentile=95,
            spacing=spacing,
            directed=False,
        ).item()
        # MONAI computes in float32; ours in float64.
        assert hd95(pred, ref, spacing) == pytest.approx(expected, rel=1e-6, abs=1e-6), (trial, spacing)


def test_hd95_per_class_flags_empty_classes_and_averages_finite_ones():
    ref = np.zeros((20, 20), np.uint8)
    pred = np.zeros((20, 20), np.uint8)
    ref[5, 2:12] = 1
    pred[8, 2:12] = 1  # RV: 3 rows * 2 mm = 6 mm
    ref[15, 2:12] = 3
    pred[15, 2:12] = 3  # LV: 0 mm
    pred[0, 0] = 2  # Myo only in prediction -> empty in the reference
    distances, empty = hd95_per_class(pred, ref, (2.0, 1.0))
    assert list(distances) == ["RV", "Myo", "LV", "mean"]
    assert distances["RV"] == pytest.approx(6.0)
    assert math.isnan(distances["Myo"])
    assert distances["LV"] == 0.0
    assert distances["mean"] == pytest.approx(3.0)
    assert empty == ["Myo"]


# ---- Jacobian ---------------------------------------------------------------


def affine_field(matrix, shape, spacing):
    """u(x) = A x in mm, x the physical coordinate of each pixel."""
    grid = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij"))
    return np.einsum("ij,jxy->ixy", np.asarray(matrix), grid)


@pytest.mark.parametrize(
    "matrix",
    [
        [[0.0, 0.0], [0.0, 0.0]],
        [[0.2, -0.1], [0.05, -0.3]],
        [[-0.5, 0.4], [0.3, 0.1]],
        [[-2.0, 0.0], [0.0, 0.0]],  # folds everywhere: det = -1
    ],
)
def test_jacobian_of_affine_field_is_det_identity_plus_a(matrix):
    spacing = (1.8, 0.7)
    u = affine_field(matrix, (9, 13), spacing)
    jac = jacobian_determinant(u, spacing)
    assert jac.shape == (9, 13)
    np.testing.assert_allclose(jac, np.linalg.det(np.eye(2) + np.asarray(matrix)), atol=1e-12)


def test_jacobian_of_translation_is_one_and_components_follow_axes():
    spacing = (2.0, 0.5)
    u = np.zeros((2, 6, 7))
    u += np.array([3.0, -1.0])[:, None, None]
    np.testing.assert_allclose(jacobian_determinant(u, spacing), 1.0)
    # u0 = 0.1 * x1 (shear) alone leaves det = 1; u0 = 0.1 * x0 gives 1.1.
    x0, x1 = np.meshgrid(np.arange(6) * 2.0, np.arange(7) * 0.5, indexing="ij")
    np.testing.assert_allclose(jacobian_determinant(np.stack([0.1 * x1, 0 * x1]), spacing), 1.0)
    np.testing.assert_allclose(jacobian_determinant(np.stack([0.1 * x0, 0 * x0]), spacing), 1.1)


def test_jacobian_uses_one_sided_differences_at_the_border():
    # u0 = x0^2 / 2: central differences give du0/dx0 = x0 exactly inside; the
    # forward difference on the first row gives h / 2, the backward one on the
    # last row gives x_last - h / 2.
    h = 1.5
    x0 = np.arange(5) * h
    u = np.zeros((2, 5, 3))
    u[0] = (x0**2 / 2)[:, None]
    jac = jacobian_determinant(u, (h, 1.0))
    np.testing.assert_allclose(jac[1:-1, 0], 1 + x0[1:-1])
    assert jac[0, 0] == pytest.approx(1 + h / 2)
    assert jac[-1, 0] == pytest.approx(1 + x0[-1] - h / 2)


def test_jacobian_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"shape \(2, X, Y\) with X, Y >= 2, got \(3, 4, 4\)"):
        jacobian_determinant(np.zeros((3, 4, 4)), (1.0, 1.0))


def test_sdlogj_and_neg_jac_pct_hand_computed_with_folds():
    jac = np.array([[1.0, math.e], [math.exp(-1), -0.5]])
    logs = np.array([0.0, 1.0, -1.0, math.log(1e-9)])  # the fold is clipped to 1e-9
    assert sdlogj(jac) == pytest.approx(np.sqrt(np.mean((logs - logs.mean()) ** 2)))
    assert neg_jac_pct(jac) == 25.0
    mask = np.array([[True, True], [True, False]])
    assert sdlogj(jac, mask) == pytest.approx(math.sqrt(2 / 3))
    assert neg_jac_pct(jac, mask) == 0.0
    assert neg_jac_pct(np.array([[0.0, 1.0]])) == 50.0  # J = 0 counts as folding
    assert math.isnan(sdlogj(jac, np.zeros((2, 2), bool)))
    assert math.isnan(neg_jac_pct(jac, np.zeros((2, 2), bool)))
    with pytest.raises(ValueError, match="mask must be boolean with the shape of jac"):
        sdlogj(jac, np.ones((2, 2), np.uint8))


# ---- One row ----------------------------------------------------------------


def test_definitions_cover_every_metric_family():
    assert set(DEFINITIONS) == {"dice", "hd95", "sdlogj", "neg_jac_pct"}
    for column in METRIC_COLUMNS:
        assert any(column.startswith(family) for family in DEFINITIONS), column


def test_initial_row_zero_field_and_moving_label():
    fixed = np.zeros((16, 16), np.uint8)
    fixed[2:6, 2:8] = 1
    fixed[8:14, 8:14] = 2
    fixed[10:12, 10:12] = 3
    moving = np.roll(fixed, 2, axis=0)  # shifted 2 px = 3.6 mm along axis 0
    row = evaluate_arrays(fixed, moving, np.zeros((2, 16, 16)), (1.8, 1.8))
    assert list(row) == list(METRIC_COLUMNS)
    assert row["dice_RV"] == pytest.approx(2 * 12 / 48)
    assert row["dice_LV"] == 0.0
    assert row["hd95_LV"] == pytest.approx(3.6)
    assert row["hd95_empty"] == ""
    assert row["sdlogj"] == 0.0 and row["sdlogj_heart"] == 0.0
    assert row["neg_jac_pct"] == 0.0 and row["neg_jac_pct_heart"] == 0.0


def test_row_field_metrics_inside_heart_mask_and_empty_flags():
    fixed = np.zeros((10, 10), np.uint8)
    fixed[0:5, :] = 3  # heart = the first 5 rows (50 px); no RV or Myo anywhere
    u = np.zeros((2, 10, 10))
    x0 = np.arange(10) * 1.0
    # u0 = -2 x0 on rows 6..9 folds there (J = -1 on the interior rows 7, 8 and the
    # one-sided last row; row 6 sees a central difference across the kink).
    u[0, 6:, :] = (-2 * (x0[6:] - 6))[:, None]
    jac = jacobian_determinant(u, (1.0, 1.0))
    row = evaluate_arrays(fixed, fixed, u, (1.0, 1.0))
    assert row["neg_jac_pct"] == pytest.approx(100 * np.count_nonzero(jac <= 0) / 100)
    assert row["neg_jac_pct"] > 0
    assert row["neg_jac_pct_heart"] == 0.0 and row["sdlogj_heart"] == 0.0
    assert row["hd95_empty"] == "RV;Myo"
    assert math.isnan(row["dice_RV"]) and row["dice_mean"] == 1.0 and row["hd95_mean"] == 0.0


def test_row_rejects_mismatched_field():
    labels = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match=r"displacement_mm must have shape \(2, 8, 8\) to match the labels, got \(2, 8, 7\)"):
        evaluate_arrays(labels, labels, np.zeros((2, 8, 7)), (1.0, 1.0))

"""Image and feature dissimilarities on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from featreg.registration.losses import cosine_dissimilarity, l1_distance, mse, ncc


def row(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_ncc_hand_computed():
    # F = [0,1,0,1], M = [0,1,1,1]: Σfm = 0.5, Σf² = 1, Σm² = 0.75.
    assert ncc(row(0, 1, 0, 1), row(0, 1, 1, 1)).item() == pytest.approx(-0.5 / math.sqrt(0.75), abs=1e-9)
    assert ncc(row(1, 2, 3, 4), row(2, 4, 6, 8)).item() == pytest.approx(-1.0, abs=1e-9)
    assert ncc(row(1, 2, 3, 4), row(4, 3, 2, 1)).item() == pytest.approx(1.0, abs=1e-9)


def test_ncc_ignores_masked_pixels_and_is_per_pair():
    fixed = torch.cat([row(1, 2, 3, 100), row(0, 1, 0, 1)])
    warped = torch.cat([row(1, 2, 3, -50), row(0, 1, 1, 1)])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool).view(2, 1, 1, 4)
    values = ncc(fixed, warped, mask)
    assert values.tolist() == pytest.approx([-1.0, -0.5 / math.sqrt(0.75)], abs=1e-9)


def test_ncc_gradients_match_finite_differences():
    torch.manual_seed(0)
    fixed = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    warped = torch.rand(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(2, 1, 5, 6) > 0.3
    assert torch.autograd.gradcheck(ncc, (fixed, warped, mask))
    assert torch.autograd.gradcheck(ncc, (fixed, warped))


def test_ncc_of_constant_images_is_zero_not_nan():
    assert ncc(row(1, 1, 1), row(2, 2, 2)).item() == 0.0


def test_mse_hand_computed():
    assert mse(row(0, 1, 0, 1), row(0, 1, 1, 1)).item() == pytest.approx(0.25)
    mask = torch.tensor([1, 1, 0, 1], dtype=torch.bool).view(1, 1, 1, 4)
    assert mse(row(0, 1, 0, 1), row(0, 3, 1, 1), mask).item() == pytest.approx(4 / 3)


def features(*pixels: tuple[float, float]) -> torch.Tensor:
    """(1, C=2, 1, P) from per-pixel channel vectors."""
    return torch.tensor(pixels, dtype=torch.float64).T.reshape(1, 2, 1, len(pixels))


def test_cosine_dissimilarity_hand_computed():
    # pixel 1: (1,0) vs (0,1) -> cos 0; pixel 2: (1,1) vs (2,2) -> cos 1; minus the mean.
    assert cosine_dissimilarity(features((1, 0), (1, 1)), features((0, 1), (2, 2))).item() == pytest.approx(-0.5)
    assert cosine_dissimilarity(features((1, 2)), features((-1, -2))).item() == pytest.approx(1.0)


def test_l1_hand_computed():
    # |1-0| + |0-1| + |1-2| + |1-2| over 2 channels x 2 pixels.
    assert l1_distance(features((1, 0), (1, 1)), features((0, 1), (2, 2))).item() == pytest.approx(1.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"feature shapes differ: \(1, 2, 1, 2\) vs \(1, 2, 1, 1\)"):
        l1_distance(features((1, 0), (1, 1)), features((0, 1)))

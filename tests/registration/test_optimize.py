"""register_pairs: recovery of a known deformation, batching, failure isolation, early stop, terms."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from registration_helpers import jacobian_det_px, known_pair, textured

from featreg.registration.bspline import BSplineTransform, scaling_and_squaring
from featreg.registration.optimize import pair_objective, register_pairs
from featreg.registration.progress import ProgressLog
from featreg.registration.regularisers import diffusion, regulariser_weights
from featreg.registration.settings import RegistrationSettings


def pooled_features(images: torch.Tensor) -> torch.Tensor:
    """A tiny differentiable 'encoder': 4x4 average pooling to 3 channels of image, square, gradient."""
    pooled = F.avg_pool2d(images, 4)
    return torch.cat([pooled, pooled**2, pooled.diff(dim=-1, prepend=pooled[..., :1])], dim=1)


def test_recovers_a_known_smooth_deformation():
    fixed, moving, u_true = known_pair()
    settings = RegistrationSettings(lattice=(10, 10), lr=5e-3, iterations=250, lam=1.0)
    result = register_pairs(fixed, moving, settings, spacing=(1.0, 1.0), device="cpu", progress_every_s=None)
    u_est = result.displacement_mm[0].astype(np.float64)  # spacing 1 mm: mm = px
    inner = (slice(None), slice(4, -4), slice(4, -4))  # the border is unconstrained by the image
    error = np.linalg.norm(u_est - u_true, axis=0)[inner[1:]].mean()
    initial = np.linalg.norm(u_true, axis=0)[inner[1:]].mean()
    assert error <= 0.25 * initial, (error, initial)
    assert jacobian_det_px(u_est).min() > 0
    assert result.status == ["ok"] and result.iterations.tolist() == [250]
    assert result.loss.shape == (1, 250, 4)
    assert result.loss[0, -1, 0] < result.loss[0, 0, 0]


def test_batched_equals_single_runs():
    rng = np.random.default_rng(0)
    fixed = torch.from_numpy(rng.random((3, 1, 32, 32), dtype=np.float32))
    moving = torch.roll(fixed, shifts=1, dims=-1) * 0.9 + 0.05
    settings = RegistrationSettings(lattice=(6, 6), lr=2e-3, iterations=30)
    batch = register_pairs(fixed, moving, settings, device="cpu", progress_every_s=None)
    for b in range(3):
        single = register_pairs(fixed[b : b + 1], moving[b : b + 1], settings, device="cpu", progress_every_s=None)
        np.testing.assert_allclose(batch.displacement_mm[b], single.displacement_mm[0], atol=1e-5)
        np.testing.assert_allclose(batch.loss[b], single.loss[0], atol=1e-5)


def test_nan_in_one_pair_stops_only_that_pair():
    rng = np.random.default_rng(1)
    fixed = torch.from_numpy(rng.random((3, 1, 32, 32), dtype=np.float32))
    moving = torch.roll(fixed, shifts=2, dims=-2)
    calls = {"n": 0}

    def flaky(images: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = pooled_features(images)
        if calls["n"] > 5:  # call 1 encodes the fixed images; iteration k is call k + 1
            poison = torch.ones_like(out)
            poison[1] = float("nan")
            out = out * poison
        return out

    settings = RegistrationSettings(lattice=(6, 6), lr=2e-3, iterations=20, alpha=0.5, feature_distance="cosine")
    result = register_pairs(fixed, moving, settings, encoder=flaky, device="cpu", progress_every_s=None)
    assert result.status == ["ok", "failed", "ok"]
    assert result.reason[1] == "loss became NaN at iteration 5"
    assert result.iterations.tolist() == [20, 4, 20]
    assert np.isfinite(result.displacement_mm).all()
    clean = register_pairs(fixed[[0, 2]], moving[[0, 2]], settings, encoder=pooled_features, device="cpu", progress_every_s=None)
    np.testing.assert_allclose(result.displacement_mm[[0, 2]], clean.displacement_mm, atol=1e-5)


def test_early_stop_records_fewer_iterations():
    fixed, moving, _ = known_pair()
    settings = RegistrationSettings(lattice=(8, 8), lr=5e-3, iterations=400, early_stop_rtol=1e-3)
    result = register_pairs(fixed, moving, settings, device="cpu", progress_every_s=None)
    used = int(result.iterations[0])
    assert 10 < used < 400
    assert result.evaluations[0] == used + 1
    assert np.isnan(result.loss[0, used + 1 :, 0]).all()


def test_alpha_zero_never_calls_the_encoder_and_alpha_one_skips_the_image_term():
    fixed = torch.rand(2, 1, 16, 16)
    moving = torch.rand(2, 1, 16, 16)

    def forbidden(images):
        raise AssertionError("encoder called with alpha = 0")

    base = register_pairs(fixed, moving, RegistrationSettings(lattice=(4, 4), iterations=3), encoder=forbidden,
                          device="cpu", progress_every_s=None)
    assert np.isnan(base.loss[:, :, 2]).all() and np.isfinite(base.loss[:, :, 1]).all()
    features = RegistrationSettings(lattice=(4, 4), iterations=3, alpha=1.0, feature_distance="l1")
    only = register_pairs(fixed, moving, features, encoder=pooled_features, device="cpu", progress_every_s=None)
    assert np.isnan(only.loss[:, :, 1]).all() and np.isfinite(only.loss[:, :, 2]).all()
    np.testing.assert_allclose(only.loss[:, :, 0], only.loss[:, :, 2] + 120 * only.loss[:, :, 3], rtol=1e-5)


def test_paper_mode_stays_diffeomorphic_on_a_large_deformation():
    # Swirl of up to ~8 px (1 rad at the centre): the moving image is the fixed one rotated about the centre by a smooth angle.
    n = 64
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = (n - 1) / 2
    r = np.hypot(i - c, j - c)
    angle = 1.0 * np.exp(-((r / 18) ** 2))
    pi = c + np.cos(angle) * (i - c) - np.sin(angle) * (j - c)
    pj = c + np.sin(angle) * (i - c) + np.cos(angle) * (j - c)
    fixed = torch.from_numpy(textured(np.stack([i, j]).astype(float)))[None, None]
    moving = torch.from_numpy(textured(np.stack([pi, pj])))[None, None]
    settings = RegistrationSettings.paper(lr=1e-2, iterations=300, lam=0.0)  # 13x13 control points at 6 px
    result = register_pairs(fixed, moving, settings, spacing=(1.0, 1.0), device="cpu", progress_every_s=None)
    u = result.displacement_mm[0].astype(np.float64)
    assert np.abs(u).max() > 5  # it did deform a lot
    assert jacobian_det_px(u).min() > 0


def test_bad_inputs_are_rejected():
    s = RegistrationSettings(lattice=(4, 4), iterations=1)
    with pytest.raises(ValueError, match=r"fixed must have shape \(B, 1, X, Y\), got \(16, 16\)"):
        register_pairs(torch.rand(16, 16), torch.rand(16, 16), s, device="cpu")
    with pytest.raises(ValueError, match=r"fixed and moving shapes differ"):
        register_pairs(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 17), s, device="cpu")
    with pytest.raises(ValueError, match="alpha = 0.5 needs an encoder"):
        register_pairs(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16),
                       RegistrationSettings(lattice=(4, 4), alpha=0.5, feature_distance="l1"), device="cpu")


def test_progress_lines_report_iteration_mean_loss_and_active_pairs(caplog):
    fixed, moving, _ = known_pair()
    settings = RegistrationSettings(lattice=(8, 8), lr=5e-3, iterations=5)
    with caplog.at_level("INFO", logger="featreg.registration.optimize"):
        result = register_pairs(fixed, moving, settings, device="cpu", progress_every_s=0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iteration ")]
    assert [line.split(":")[0] for line in lines] == [f"iteration {i}/5" for i in range(1, 6)]
    assert f"mean loss {result.loss[0, 4, 0]:.6g} over 1/1 active pair(s)" in lines[-1]
    assert lines[-1].endswith("ETA 0 s")


def test_progress_lines_are_rate_limited_and_can_be_silenced(caplog):
    now = [0.0]
    progress = ProgressLog(100, 30.0, logging.getLogger("progress-test"), clock=lambda: now[0])
    written = []
    with caplog.at_level("INFO", logger="progress-test"):
        for iteration in (10, 29, 31, 50, 62):  # one iteration per second
            now[0] = float(iteration)
            if progress.due():
                progress.write(iteration, torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([True, True, False]))
                written.append(iteration)
    assert written == [31, 62]  # 10 and 29 s are too early, and 50 s is too soon after the line at 31 s
    assert caplog.records[0].getMessage() == "iteration 31/100: mean loss 1 over 2/3 active pair(s), 1.0 it/s, ETA 1 min 09 s"
    fixed, moving, _ = known_pair()
    caplog.clear()
    with caplog.at_level("INFO"):
        register_pairs(fixed, moving, RegistrationSettings(lattice=(8, 8), iterations=3), device="cpu", progress_every_s=None)
    assert not [r for r in caplog.records if r.getMessage().startswith("iteration ")]


def reference_objective(transform, params, fixed, moving, lam, weights):
    """The engine's objective as written before its CPU tuning: interleaved grid, mask over the last axis, flipped field."""
    field = transform.basis_x @ params.flip(1) @ transform.basis_y_t
    if transform.diffeomorphic:
        field = scaling_and_squaring(field, transform.squaring_steps, transform.squaring_convention)
    X, Y = field.shape[-2:]
    identity = torch.stack(torch.meshgrid(torch.linspace(-1, 1, Y), torch.linspace(-1, 1, X), indexing="xy"), dim=-1)[None]
    grid = identity + field.permute(0, 2, 3, 1)
    warped = F.grid_sample(moving, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (grid.abs() <= 1).all(dim=-1).unsqueeze(1)
    reg = diffusion(field.flip(1), weights) if transform.diffeomorphic else transform.difference_energy(params, weights)
    image = []
    for b in range(len(fixed)):  # global NCC over the pixels whose sample point is inside the image
        f, w = fixed[b][inside[b]], warped[b][inside[b]]
        f, w = f - f.mean(), w - w.mean()
        image.append(-(f * w).sum() / torch.sqrt((f * f).sum() * (w * w).sum() + 1e-10))
    return torch.stack(image) + lam * reg


@pytest.mark.parametrize("settings", [RegistrationSettings(lattice=(9, 9)), RegistrationSettings.paper(control_spacing_px=8),
                                      RegistrationSettings.paper(control_spacing_px=8, squaring_convention="exact")])
def test_objective_and_gradient_equal_the_reference_formulation(settings):
    torch.manual_seed(5)
    fixed, moving = torch.rand(3, 1, 40, 36), torch.rand(3, 1, 40, 36)
    transform = BSplineTransform((40, 36), lattice=settings.lattice, control_spacing_px=settings.control_spacing_px,
                                 placement=settings.lattice_placement, order=settings.order, diffeomorphic=settings.diffeomorphic,
                                 squaring_steps=settings.squaring_steps, squaring_convention=settings.squaring_convention)
    weights = regulariser_weights("physical", (40, 36), (1.8, 1.2))  # asymmetric: component order matters
    params = (0.08 * torch.randn(3, 2, *transform.lattice)).requires_grad_()  # some sample points leave the image
    total = pair_objective(transform, params, fixed, moving, settings, weights.float())[0]
    (grad,) = torch.autograd.grad(total.sum(), params)
    expected = reference_objective(transform, params, fixed, moving, settings.lam, weights.float())
    (expected_grad,) = torch.autograd.grad(expected.sum(), params)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_cpu_runs_are_bitwise_reproducible():
    fixed, moving, _ = known_pair()
    settings = RegistrationSettings.paper(iterations=20, lr=5e-3)
    first, second = (register_pairs(fixed, moving, settings, device="cpu", progress_every_s=None) for _ in range(2))
    np.testing.assert_array_equal(first.displacement_mm, second.displacement_mm)
    np.testing.assert_array_equal(first.loss, second.loss)

"""encode: once against each_iteration, the feature-map sampler's coordinates, and the joint PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from registration_helpers import known_pair

from featreg.registration import kernels, pca
from featreg.registration.bspline import BSplineTransform, knot_positions
from featreg.registration.losses import FEATURE_DISTANCES
from featreg.registration.optimize import pair_objective, register_pairs
from featreg.registration.regularisers import regulariser_weights
from featreg.registration.sampling import feature_points, warp_features
from featreg.registration.settings import RegistrationSettings
from featreg.registration.units import displacement_from_mm

SHAPE = (40, 36)
WEIGHTS = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64).view(1, -1, 1, 1)
BIAS = torch.tensor([0.2, 0.5, -0.4], dtype=torch.float64).view(1, -1, 1, 1)


def linear_encoder(images: torch.Tensor) -> torch.Tensor:
    """A fixed per-pixel affine map at the image grid (g = N): commutes with warping.

    Bilinear weights sum to one (border replication included), so the bias commutes
    too; without it every cell's channel vector would be parallel and the cosine constant.
    """
    return images * WEIGHTS.to(images.dtype) + BIAS.to(images.dtype)


def pooled(images: torch.Tensor) -> torch.Tensor:
    """A 2x2-pooled, 3-channel map (g = N/2), as an encoder's coarser grid."""
    p = F.avg_pool2d(images, 2)
    return torch.cat([p, p**2, p.diff(dim=-1, prepend=p[..., :1])], dim=1)


def transform_of(settings: RegistrationSettings) -> BSplineTransform:
    return BSplineTransform(SHAPE, lattice=settings.lattice, control_spacing_px=settings.control_spacing_px,
                            placement=settings.lattice_placement, order=settings.order, diffeomorphic=settings.diffeomorphic,
                            squaring_steps=settings.squaring_steps, squaring_convention=settings.squaring_convention,
                            dtype=torch.float64)


def inward_params(transform: BSplineTransform, batch: int, seed: int) -> torch.Tensor:
    """A contraction by 8 % plus a smaller random field: every sample point stays inside the image."""
    generator = torch.Generator().manual_seed(seed)
    params = 0.02 * torch.randn(batch, 2, *transform.lattice, generator=generator, dtype=torch.float64)
    for axis, n in enumerate(SHAPE):
        knots = knot_positions(n, transform.lattice[axis], transform.control_spacing_px[axis], transform.placement)
        shape = [1, 1, 1]
        shape[axis + 1] = -1
        params[:, axis] -= 0.08 * (2 * knots / (n - 1) - 1).view(shape)
    return params


SETTINGS = {
    "cubic": RegistrationSettings(lattice=(7, 6), lam=0.0),
    "paper": RegistrationSettings.paper(control_spacing_px=8, lam=0.0),
}


@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("distance", ["cosine", "l1"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_once_equals_each_iteration_for_an_encoder_that_commutes_with_warping(name, distance, alpha):
    base = RegistrationSettings.from_dict({**SETTINGS[name].to_dict(), "alpha": alpha, "feature_distance": distance})
    transform = transform_of(base)
    generator = torch.Generator().manual_seed(3)
    fixed, moving = (torch.rand(2, 1, *SHAPE, generator=generator, dtype=torch.float64) for _ in range(2))
    weights = regulariser_weights(base.regulariser, SHAPE, (1.8, 1.8)).double()
    params = inward_params(transform, 2, seed=4).requires_grad_()
    assert feature_points(transform.sampling_grid(params)[1], SHAPE)[1].all()  # the mask is the same in both modes
    runs = {}
    for mode in ("each_iteration", "once"):
        settings = RegistrationSettings.from_dict({**base.to_dict(), "encode": mode})
        total, _, feature, _ = pair_objective(transform, params, fixed, moving, settings, weights, encoder=linear_encoder,
                                              fixed_features=linear_encoder(fixed), moving_features=linear_encoder(moving))
        (grad,) = torch.autograd.grad(total.sum(), params)
        runs[mode] = (total.detach(), feature.detach(), grad)
    (total, feature, grad), (total_once, feature_once, grad_once) = runs["each_iteration"], runs["once"]
    assert grad.norm() > 1e-2 * total.abs().sum()  # a gradient of the loss's own scale: the tolerance below is not vacuous
    torch.testing.assert_close(feature_once, feature, rtol=1e-6, atol=0)
    torch.testing.assert_close(total_once, total, rtol=1e-6, atol=0)
    assert (grad_once - grad).norm() <= 1e-6 * grad.norm()


def test_once_never_calls_the_encoder_inside_the_loop():
    fixed, moving = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    calls = []

    def counting(images):
        calls.append(images.shape[0])
        return pooled(images)

    once = RegistrationSettings(lattice=(6, 6), iterations=7, alpha=1.0, feature_distance="cosine", encode="once")
    register_pairs(fixed, moving, once, encoder=counting, moving_features=pooled(moving), device="cpu", progress_every_s=None)
    assert calls == [2]  # the fixed images, before the loop
    calls.clear()
    result = register_pairs(fixed, moving, once, fixed_features=pooled(fixed), moving_features=pooled(moving), device="cpu",
                            progress_every_s=None)
    assert result.status == ["ok", "ok"] and result.pca_kept is None
    each = RegistrationSettings.from_dict({**once.to_dict(), "encode": "each_iteration"})
    register_pairs(fixed, moving, each, encoder=counting, device="cpu", progress_every_s=None)
    assert calls == [2] * 8  # the fixed images, then the warped ones at every iteration


def test_once_needs_the_moving_features():
    fixed, moving = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    once = RegistrationSettings(lattice=(4, 4), iterations=1, alpha=0.5, feature_distance="l1", encode="once")
    with pytest.raises(ValueError, match=r"encode 'once' with alpha = 0.5 needs moving_features \(B, C, g, g\), encoded beforehand"):
        register_pairs(fixed, moving, once, encoder=pooled, device="cpu")
    with pytest.raises(ValueError, match="alpha = 0.5 needs an encoder or fixed_features"):
        register_pairs(fixed, moving, once, moving_features=pooled(moving), device="cpu")
    with pytest.raises(ValueError, match=r"moving_features \(1, 3, 4, 4\) do not match fixed_features \(1, 3, 8, 8\)"):
        register_pairs(fixed, moving, once, fixed_features=pooled(fixed), moving_features=pooled(pooled(moving)[:, :1]), device="cpu")


@pytest.mark.parametrize("settings", [
    RegistrationSettings(lattice=(6, 6), lr=2e-3, iterations=20, alpha=1.0, feature_distance="cosine", encode="once"),
    RegistrationSettings.paper(control_spacing_px=8, lr=2e-3, iterations=20, alpha=0.3, feature_distance="l1", encode="once", pca=2),
    RegistrationSettings(lattice=(6, 6), lr=2e-3, iterations=10, alpha=1.0, feature_distance="l1", pca=2),
], ids=["cubic-once", "paper-once-pca", "cubic-each-pca"])
def test_batched_equals_single(settings):
    rng = np.random.default_rng(0)
    fixed = torch.from_numpy(rng.random((3, 1, 32, 32), dtype=np.float32))
    moving = torch.roll(fixed, shifts=1, dims=-1) * 0.9 + 0.05
    batch = register_pairs(fixed, moving, settings, encoder=pooled, moving_features=pooled(moving), device="cpu",
                           progress_every_s=None)
    for b in range(3):
        single = register_pairs(fixed[b : b + 1], moving[b : b + 1], settings, encoder=pooled, moving_features=pooled(moving[b : b + 1]),
                                device="cpu", progress_every_s=None)
        np.testing.assert_allclose(batch.displacement_mm[b], single.displacement_mm[0], atol=1e-5)
        np.testing.assert_allclose(batch.loss[b], single.loss[0], atol=1e-5)
        if settings.pca is not None:
            np.testing.assert_allclose(batch.pca_kept[b], single.pca_kept[0], rtol=1e-9)


def test_once_with_the_images_as_features_recovers_a_known_deformation():
    fixed, moving, u_true = known_pair()
    settings = RegistrationSettings(lattice=(10, 10), lr=5e-3, iterations=250, lam=1.0, alpha=1.0, feature_distance="l1", encode="once")
    result = register_pairs(fixed, moving, settings, spacing=(1.0, 1.0), fixed_features=fixed, moving_features=moving, device="cpu",
                            progress_every_s=None)
    u_est = result.displacement_mm[0].astype(np.float64)  # spacing 1 mm: mm = px
    inner = (slice(4, -4), slice(4, -4))  # the border is unconstrained by the image
    error = np.linalg.norm(u_est - u_true, axis=0)[inner].mean()
    initial = np.linalg.norm(u_true, axis=0)[inner].mean()
    assert error <= 0.25 * initial, (error, initial)
    assert result.loss[0, -1, 2] < 0.5 * result.loss[0, 0, 2]


def test_the_feature_sampler_puts_cell_k_at_fraction_k_plus_half_over_g():
    features = torch.rand(2, 4, 16, 12, dtype=torch.float64)
    zero = torch.zeros(2, 2, 32, 36, dtype=torch.float64)
    warped, inside = warp_features(features, zero)
    torch.testing.assert_close(warped, features, rtol=0, atol=1e-12)  # the identity samples each cell at its own centre
    assert inside.all()
    # One cell (two pixels along X) to the right: cell k takes cell k + 1, but the last (border replication, and outside)
    shift = zero.clone()
    shift[:, 1] = 2 * 2 / 31  # plane 1 is along X; 2 px in normalised units
    warped, inside = warp_features(features, shift)
    torch.testing.assert_close(warped[:, :, :-1], features[:, :, 1:], rtol=0, atol=1e-12)
    assert inside[:, :, :-1].all() and not inside[:, :, -1].any()
    # An independent formula, in mm: cell j at normalised (2j + 1)/g - 1 of the map, the field
    # resampled to the cells and scaled by 2 / (N·spacing) into the map's align_corners=False units
    field_mm = 3 * torch.randn(2, 2, 32, 36, dtype=torch.float64)
    field = torch.from_numpy(displacement_from_mm(field_mm.numpy(), (1.8, 1.2))).double()
    g = features.shape[-2:]
    u = F.interpolate(field_mm, size=g, mode="bilinear", align_corners=False)
    scale = torch.tensor([2 / (32 * 1.8), 2 / (36 * 1.2)], dtype=u.dtype).view(1, 2, 1, 1)
    axes = [(2 * torch.arange(n, dtype=u.dtype) + 1) / n - 1 for n in g]
    cells = torch.stack(torch.meshgrid(*axes, indexing="ij")) + u * scale
    expected = F.grid_sample(features, cells.flip(1).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                             align_corners=False)
    torch.testing.assert_close(warp_features(features, field.flip(1))[0], expected, rtol=0, atol=1e-5)


def test_pca_with_every_channel_keeps_the_l2_geometry_and_all_the_variance():
    generator = torch.Generator().manual_seed(0)
    fixed, moving = (torch.randn(2, 5, 6, 7, generator=generator, dtype=torch.float64) * 3 + 1 for _ in range(2))
    mean, basis, kept = pca.joint_basis(fixed, moving, 5)
    torch.testing.assert_close(kept, torch.ones(2, dtype=torch.float64))
    def distances(maps):  # between every two cells of both maps
        cells = torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)
        return torch.cdist(cells, cells, compute_mode="donot_use_mm_for_euclid_dist")

    projected = [pca.project(fixed, mean, basis), pca.project(moving, mean, basis)]
    torch.testing.assert_close(distances(projected), distances([fixed, moving]), rtol=0, atol=1e-10)


def test_pca_orders_components_and_reports_the_kept_fraction():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(1, 2, 8, 8, generator=generator, dtype=torch.float64) * torch.tensor([3.0, 1.0]).view(1, 2, 1, 1)
    mix = torch.linalg.qr(torch.randn(4, 2, generator=generator, dtype=torch.float64))[0]  # 2-d subspace of 4 channels
    fixed = torch.einsum("bkxy,ck->bcxy", scores, mix) + 5
    moving = fixed.flip(-1)
    _, basis, kept = pca.joint_basis(fixed, moving, 2)
    torch.testing.assert_close(kept, torch.ones(1, dtype=torch.float64))
    _, _, kept_one = pca.joint_basis(fixed, moving, 1)
    assert 0.8 < kept_one.item() < 1  # the first component holds the larger variance (9 against 1)
    torch.testing.assert_close(basis[0].T @ basis[0], torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="pca = 5 needs an integer between 1 and the features' 4 channels"):
        pca.joint_basis(fixed, moving, 5)


@pytest.mark.parametrize("distance", ["cosine", "l1"])
@pytest.mark.parametrize("cells", [(16, 18), (32, 36)], ids=["coarser", "pixels"])
def test_the_fused_node_equals_the_sampler_and_distance_in_value_and_gradient(cells, distance):
    generator = torch.Generator().manual_seed(2)
    fixed, moving = (torch.randn(3, 5, *cells, generator=generator) for _ in range(2))
    moving[1, :, 4, 5] = 0  # a zero vector: cosine's eps clamp
    coarse = 0.12 * torch.randn(3, 2, 5, 4, generator=generator)
    field = F.interpolate(coarse, size=(32, 36), mode="bicubic", align_corners=True)
    field[0] = 0  # the identity: border cells sit exactly on the clamp
    field = field.requires_grad_()
    points, inside = feature_points(field, cells)
    assert not inside.all()  # some cells leave the image: masked out
    fused = kernels.warped_feature_distance(fixed.contiguous(memory_format=torch.channels_last), moving, points, (32, 36), distance)
    (fused_grad,) = torch.autograd.grad(fused.sum() * 1.7, field)
    reference = FEATURE_DISTANCES[distance](fixed, *warp_features(moving, field))
    (reference_grad,) = torch.autograd.grad(reference.sum() * 1.7, field)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-6)
    assert (fused_grad - reference_grad).norm() <= 1e-5 * reference_grad.norm()


def test_once_registration_on_the_fused_node_equals_the_torch_path(monkeypatch):
    fixed, moving, _ = known_pair()
    settings = RegistrationSettings.paper(control_spacing_px=8, lr=5e-3, iterations=30, alpha=0.5, feature_distance="cosine",
                                          encode="once", pca=2)
    args = {"fixed_features": pooled(fixed), "moving_features": pooled(moving), "device": "cpu", "progress_every_s": None}
    fused = register_pairs(fixed, moving, settings, **args)
    monkeypatch.setattr(kernels, "FUSED_CPU", False)
    reference = register_pairs(fixed, moving, settings, **args)
    np.testing.assert_allclose(fused.loss, reference.loss, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fused.displacement_mm, reference.displacement_mm, rtol=0, atol=1e-4)

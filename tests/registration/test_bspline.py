"""B-spline transform: identity, partition of unity, gradients, diffeomorphic mode, unit conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from registration_helpers import jacobian_det_px

from featreg.registration.settings import RegistrationSettings
from featreg.registration.bspline import BSplineTransform, banded, basis_matrix, knot_positions, lattice_size, scaling_and_squaring
from featreg.registration.sampling import sample_bilinear, warp_grid_inside, warp_image, warp_labels
from featreg.registration.units import displacement_from_mm, displacement_to_mm


@pytest.mark.parametrize("order,diffeomorphic", [(3, False), (1, False), (1, True), (3, True)])
def test_zero_parameters_are_exactly_the_identity(order, diffeomorphic):
    image = torch.rand(2, 1, 37, 29)
    transform = BSplineTransform((37, 29), lattice=(8, 7), order=order, diffeomorphic=diffeomorphic)
    displacement = transform.displacement(transform.zeros(2))
    assert torch.equal(warp_image(image, displacement), image)
    labels = torch.randint(0, 4, (2, 1, 37, 29), dtype=torch.uint8)
    assert torch.equal(warp_labels(labels, displacement), labels)


@pytest.mark.parametrize("order,count", [(3, 24), (1, 24), (3, 5), (1, 2)])
def test_basis_rows_sum_to_one(order, count):
    n, spacing = 128, lattice_size(128, count=count, order=order)[1]
    basis = basis_matrix(n, count, spacing, order, dtype=torch.float64)
    assert torch.allclose(basis.sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-12)


def test_banded_gives_each_control_points_run_of_pixels():
    # Linear kernels, 5 pixels, 3 control points 2 px apart at pixels 0, 2, 4: point k weighs pixels 2k-1 .. 2k+1.
    basis = basis_matrix(5, 3, 2.0, 1)
    weights, lo, hi = banded(basis)
    assert weights.shape == (3, 5) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights, basis.numpy().T)
    assert lo.tolist() == [0, 1, 3] and hi.tolist() == [2, 4, 5]
    # A cubic basis: outside its run each control point's weights are zero.
    weights, lo, hi = banded(BSplineTransform((40, 36), lattice=(9, 7)).basis_x)
    for k in range(weights.shape[0]):
        assert (weights[k, lo[k]:hi[k]] != 0).all() and not weights[k, :lo[k]].any() and not weights[k, hi[k]:].any()


def test_lattice_by_count_and_by_spacing():
    assert lattice_size(128, count=24, order=3) == (24, 127 / 21)
    assert lattice_size(128, count=24, order=1) == (24, 127 / 23)
    # 127 px at 6 px spacing needs 22 intervals -> 23 points, plus one beyond each end for cubic.
    assert lattice_size(128, spacing_px=6, order=3) == (25, 6.0)
    assert lattice_size(128, spacing_px=6, order=1) == (23, 6.0)
    transform = BSplineTransform((128, 96), lattice=None, control_spacing_px=8.0)
    assert transform.lattice == (19, 15)
    with pytest.raises(ValueError, match="order 3 needs at least 4 control points per axis, got 3"):
        lattice_size(64, count=3, order=3)


def test_translation_is_reproduced_and_converted_to_mm():
    transform = BSplineTransform((33, 17), lattice=(6, 5))
    params = torch.zeros(1, 2, 6, 5)
    params[:, 0] = 0.25  # a constant control field is a constant displacement (partition of unity)
    params[:, 1] = -0.5
    field = transform.displacement(params)
    assert torch.allclose(field[:, 0], torch.full((1, 33, 17), 0.25), atol=1e-6)
    mm = displacement_to_mm(field[0], spacing=(2.0, 1.5))
    # 0.25 units * (33 - 1) / 2 px * 2 mm = 8 mm; -0.5 * (17 - 1) / 2 * 1.5 = -6 mm.
    np.testing.assert_allclose(mm[0], 8.0, rtol=1e-6)
    np.testing.assert_allclose(mm[1], -6.0, rtol=1e-6)
    np.testing.assert_allclose(displacement_from_mm(mm, (2.0, 1.5)), field[0].numpy(), rtol=1e-6)


def test_component_order_follows_array_axes():
    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 5, 3] = 1.0
    one_px = torch.zeros(1, 2, 9, 9)
    one_px[:, 0] = 1 / 4  # 1 px along axis 0 (1 unit = 4 px)
    warped = warp_image(image, one_px)  # warped(x) = image(x + e0)
    assert warped[0, 0, 4, 3] == 1.0 and warped.sum() == 1.0


@pytest.mark.parametrize("order,diffeomorphic", [(3, False), (1, True)])
def test_transform_gradients_match_finite_differences(order, diffeomorphic):
    torch.manual_seed(0)
    transform = BSplineTransform((9, 8), lattice=(5, 5), order=order, diffeomorphic=diffeomorphic, squaring_steps=3,
                                 dtype=torch.float64)
    image = torch.rand(1, 1, 9, 8, dtype=torch.float64)
    params = (0.05 * torch.randn(1, 2, 5, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: warp_image(image, transform.displacement(p)), (params,))


@pytest.mark.parametrize("order,diffeomorphic", [(3, False), (1, True)])
def test_loop_grid_warp_matches_the_exact_warp(order, diffeomorphic):
    torch.manual_seed(2)
    transform = BSplineTransform((31, 23), lattice=(6, 5), order=order, diffeomorphic=diffeomorphic)
    params = 0.3 * torch.randn(2, 2, 6, 5)  # large enough that some sample points leave the image
    image = torch.rand(2, 1, 31, 23)
    grid, field = transform.sampling_grid(params)
    displacement = field.flip(1)
    assert torch.allclose(displacement, transform.displacement(params), atol=1e-6)
    warped, inside = warp_grid_inside(image, grid)
    assert torch.allclose(warped, warp_image(image, displacement), atol=1e-5)
    pixel = displacement * torch.tensor([15.0, 11.0]).view(1, 2, 1, 1) + torch.stack(
        torch.meshgrid(torch.arange(31.0), torch.arange(23.0), indexing="ij"))
    expected = ((pixel >= 0) & (pixel <= torch.tensor([30.0, 22.0]).view(1, 2, 1, 1))).all(dim=1, keepdim=True)
    assert 0 < (~inside).sum() and (inside != expected).float().mean() < 1e-3


def test_sampler_gradients_in_values_and_points():
    torch.manual_seed(1)
    values = torch.rand(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    displacement = (0.3 * torch.randn(2, 2, 6, 7, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(sample_bilinear, (values, displacement))


def test_diffeomorphic_mode_does_not_fold_where_a_plain_ffd_does():
    torch.manual_seed(3)
    params = 0.05 * torch.randn(1, 2, 24, 24)  # about 3 px per control point, 5.5 px apart
    plain = BSplineTransform((128, 128), lattice=(24, 24), order=1)
    diffeo = BSplineTransform((128, 128), lattice=(24, 24), order=1, diffeomorphic=True)
    scale = 127 / 2
    j_plain = jacobian_det_px(plain.displacement(params)[0].double().numpy() * scale)
    j_diffeo = jacobian_det_px(diffeo.displacement(params)[0].double().numpy() * scale)
    assert (j_plain <= 0).mean() > 0.05  # the deformation is large: the plain field folds
    assert (j_diffeo <= 0).sum() == 0


def airlab_reference_basis(n: int, stride: int) -> torch.Tensor:
    """airlab's order-1 basis built by hand: each control point's unit impulse through conv_transpose, cropped.

    The tent kernel has 2·stride - 1 taps (stride - |d|) / stride, padding (taps - 1) / 2;
    airlab crops the output to [stride + crop_start, -stride - crop_end], for 128 px at
    stride 6 that is [5:-6] of the 6·24 - 5 = 139 samples.
    """
    count = -(-n // stride) + 2
    taps = torch.tensor([(stride - abs(d)) / stride for d in range(-(stride - 1), stride)], dtype=torch.float64)
    impulses = torch.eye(count, dtype=torch.float64)[:, None, :]  # (count, 1, count)
    out = torch.nn.functional.conv_transpose1d(impulses, taps.view(1, 1, -1), stride=stride, padding=stride - 1)[:, 0]
    assert (n, stride) == (128, 6) and out.shape[1] == 139  # the crop below is worked out for this case
    return out[:, 5:-6].T  # (n, count)


def test_airlab_placement_matches_a_hand_built_airlab_basis():
    assert lattice_size(128, spacing_px=6, order=1, placement="airlab") == (24, 6.0)
    knots = knot_positions(128, 24, 6.0, "airlab")
    assert knots.tolist() == [6.0 * k - 5 for k in range(24)]  # -5, 1, 7, ..., 127, 133
    basis = basis_matrix(128, 24, 6.0, 1, placement="airlab", dtype=torch.float64)
    torch.testing.assert_close(basis, airlab_reference_basis(128, 6), rtol=0, atol=1e-15)
    assert torch.allclose(basis.sum(dim=1), torch.ones(128, dtype=torch.float64), atol=1e-12)
    assert basis[0, 0] == pytest.approx(1 / 6) and basis[127, 22] == 1.0  # the first knot barely reaches the image
    transform = BSplineTransform((128, 128), lattice=None, control_spacing_px=6, order=1, placement="airlab")
    assert transform.lattice == (24, 24) and transform.control_spacing_px == (6.0, 6.0)
    with pytest.raises(ValueError, match="airlab placement takes spacing_px, an integer stride >= 1"):
        lattice_size(128, count=24, order=1, placement="airlab")


def test_airlab_squaring_samples_as_airlab_does():
    torch.manual_seed(4)
    velocity = 0.02 * torch.randn(2, 2, 20, 17, dtype=torch.float64)
    velocity = torch.nn.functional.interpolate(velocity[..., ::4, ::4], size=(20, 17), mode="bilinear", align_corners=True)
    # airlab's Diffeomorphic.diffeomorphic_2D with PyTorch's grid_sample defaults, written out.
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 17, dtype=torch.float64), torch.linspace(-1, 1, 20, dtype=torch.float64), indexing="xy"), dim=-1)
    u = velocity / 2**10
    for _ in range(10):
        u = u + torch.nn.functional.grid_sample(u, u.permute(0, 2, 3, 1) + grid[None], align_corners=False)
    torch.testing.assert_close(scaling_and_squaring(velocity, 10, "airlab"), u, rtol=0, atol=1e-12)
    exact = scaling_and_squaring(velocity, 10, "exact")
    assert (exact - u).abs().max() > 1e-4  # the convention changes the field
    assert torch.equal(scaling_and_squaring(torch.zeros(1, 2, 9, 8), 10, "airlab"), torch.zeros(1, 2, 9, 8))


def test_paper_mode_is_airlabs_transform():
    settings = RegistrationSettings.paper()
    transform = BSplineTransform(
        (128, 128), lattice=settings.lattice, control_spacing_px=settings.control_spacing_px, placement=settings.lattice_placement,
        order=settings.order, diffeomorphic=settings.diffeomorphic, squaring_steps=settings.squaring_steps,
        squaring_convention=settings.squaring_convention,
    )
    assert transform.lattice == (24, 24) and transform.squaring_steps == 10 and transform.squaring_convention == "airlab"
    reference = airlab_reference_basis(128, 6).float()
    torch.testing.assert_close(transform.basis_x, reference, rtol=0, atol=1e-7)
    torch.testing.assert_close(transform.basis_y_t, reference.T, rtol=0, atol=1e-7)

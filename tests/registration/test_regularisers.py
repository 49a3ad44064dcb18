"""Diffusion regularisers on hand-computed fields, in both conventions."""

from __future__ import annotations

import pytest
import torch

from featreg.registration.bspline import BSplineTransform
from featreg.registration.regularisers import diffusion, diffusion_weights, regulariser_weights


def ramp(X: int, Y: int, a: float, component: int = 0, axis: int = 0) -> torch.Tensor:
    """u_component = a * (index along axis), normalised units; the other component zero."""
    field = torch.zeros(1, 2, X, Y, dtype=torch.float64)
    index = torch.arange(X if axis == 0 else Y, dtype=torch.float64)
    field[0, component] = a * (index[:, None] if axis == 0 else index[None, :])
    return field


def regulariser(name: str, field: torch.Tensor, spacing) -> torch.Tensor:
    """The engine's dense value of a named regulariser: :func:`diffusion` with its weights."""
    return diffusion(field, regulariser_weights(name, field.shape[-2:], spacing))


def test_airlab_convention_hand_computed():
    # u0 = a*i on 4x5: dx = a on the (3, 4) crop, dy = 0; airlab divides by (X-1)*Y*3 = 45.
    assert regulariser("airlab", ramp(4, 5, 0.1), (1.8, 1.8)).item() == pytest.approx(0.01 * 12 / 45)
    # spacing multiplies (is not squared): along axis 1 with spacing 2.
    # (the engine passes airlab's [1, 1] whatever the image spacing: regulariser_weights)
    weights = diffusion_weights("airlab", (4, 5), (1, 2))
    assert diffusion(ramp(4, 5, 0.1, component=1, axis=1), weights).item() == pytest.approx(2 * 0.01 * 12 / 45)


def test_physical_convention_hand_computed():
    # u0 = a*i px-normalised on X = 5: in mm, u0 = a*i*(X-1)/2*s0, so du0/dx0 = a*(X-1)/2 = 0.2 mm/mm.
    value = regulariser("physical", ramp(5, 4, 0.1), (1.8, 1.8))
    assert value.item() == pytest.approx(0.2**2)
    # A shear u1 = a*i on anisotropic spacing: du1/dx0 = a*(Y-1)/2*s1/s0 = 0.1*1.5*3/1.5 = 0.3.
    assert regulariser("physical", ramp(5, 4, 0.1, component=1, axis=0), (1.5, 3.0)).item() == pytest.approx(0.09)


def test_constant_field_costs_nothing_and_dispatch():
    field = torch.full((2, 2, 6, 6), 0.3)
    assert regulariser("airlab", field, (1.8, 1.8)).tolist() == [0.0, 0.0]
    assert regulariser("physical", field, (1.8, 1.8)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="regulariser must be one of \\('airlab', 'physical'\\), got 'tv'"):
        regulariser("tv", field, (1.8, 1.8))


@pytest.mark.parametrize("name,order", [("airlab", 3), ("physical", 3), ("airlab", 1), ("physical", 1)])
def test_lattice_energy_equals_the_dense_regulariser(name, order):
    torch.manual_seed(0)
    transform = BSplineTransform((33, 21), lattice=(7, 6), order=order, dtype=torch.float64)
    params = 0.1 * torch.randn(3, 2, 7, 6, dtype=torch.float64)
    weights = regulariser_weights(name, (33, 21), (1.5, 2.5))
    dense = regulariser(name, transform.displacement(params), (1.5, 2.5))
    for closed_form in (False, True):
        assert torch.allclose(transform.difference_energy(params, weights, closed_form=closed_form), dense, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="difference_energy needs a non-diffeomorphic transform"):
        BSplineTransform((33, 21), lattice=(7, 6), diffeomorphic=True).difference_energy(params.float(), weights.float())


@pytest.mark.parametrize("closed_form", [False, True])
@pytest.mark.parametrize("order", [1, 3])
def test_lattice_energy_gradient_equals_the_dense_regulariser_gradient(order, closed_form):
    """Both lattice gradients (autograd's, the closed form 2·G·C·H) against autograd through the dense field."""
    torch.manual_seed(1)
    transform = BSplineTransform((33, 21), lattice=(7, 6), order=order, dtype=torch.float64)
    params = (0.1 * torch.randn(3, 2, 7, 6, dtype=torch.float64)).requires_grad_()
    weights = regulariser_weights("physical", (33, 21), (1.5, 2.5))
    scale = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # a different upstream gradient per pair
    (lattice,) = torch.autograd.grad((transform.difference_energy(params, weights, closed_form=closed_form) * scale).sum(), params)
    (dense,) = torch.autograd.grad((regulariser("physical", transform.displacement(params), (1.5, 2.5)) * scale).sum(), params)
    torch.testing.assert_close(lattice, dense, rtol=1e-10, atol=1e-12)

"""Fused CPU warp + NCC kernel: the same values and gradients as the torch ops, and the same registrations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from registration_helpers import known_pair

from featreg.registration import RegistrationSettings, kernels, register_pairs
from featreg.registration.bspline import BSplineTransform
from featreg.registration.losses import ncc
from featreg.registration.sampling import identity_planes, to_grid, warp_grid_inside


@pytest.fixture
def torch_path(monkeypatch):
    """Run a block on the torch ops: ``with torch_path(): ...``."""

    class Switch:
        def __enter__(self):
            monkeypatch.setattr(kernels, "FUSED_CPU", False)

        def __exit__(self, *exc):
            monkeypatch.setattr(kernels, "FUSED_CPU", True)

    return Switch


def random_field(batch: int, shape: tuple[int, int], amplitude: float, seed: int) -> torch.Tensor:
    """A smooth-ish random normalised field ``(B, 2, X, Y)``, large enough that some sample points leave the image."""
    generator = torch.Generator().manual_seed(seed)
    coarse = amplitude * torch.randn(batch, 2, 6, 5, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)


def test_warped_ncc_equals_grid_sample_and_ncc_in_value_and_gradient():
    torch.manual_seed(0)
    fixed, moving = torch.rand(3, 1, 40, 36), torch.rand(3, 1, 40, 36)
    field = random_field(3, (40, 36), 0.1, seed=1)
    field[0] = 0  # the identity: border points sit exactly on the clamp
    field = field.requires_grad_()
    planes = field + identity_planes(40, 36, torch.float32, torch.device("cpu"))
    assert (planes.abs() > 1).any()  # some points outside: masked out
    fused = kernels.warped_ncc(fixed, moving, planes)
    (fused_grad,) = torch.autograd.grad(fused.sum() * 1.7, field)
    reference = ncc(fixed, *warp_grid_inside(moving, to_grid(field)))
    (reference_grad,) = torch.autograd.grad(reference.sum() * 1.7, field)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused_grad, reference_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "options",
    [dict(lattice=(9, 7), order=3), dict(lattice=(24, 24), order=3), dict(lattice=None, control_spacing_px=6, order=1, placement="airlab")],
    ids=["cubic", "cubic-fine", "linear-airlab"],
)
def test_lattice_warped_ncc_equals_warped_ncc_at_the_transforms_grid(options):
    """B-spline field, warp and NCC in one node: the value and gradient of the same loss built from the dense grid."""
    torch.manual_seed(0)
    transform = BSplineTransform((40, 36), **options)
    fixed, moving = torch.rand(3, 1, 40, 36), torch.rand(3, 1, 40, 36)
    params = 0.08 * torch.randn(3, 2, *transform.lattice)
    params[0] = 0  # the identity: border points sit exactly on the clamp
    params = params.requires_grad_()
    fused = kernels.lattice_warped_ncc(fixed, moving, params, transform.bands)
    (fused_grad,) = torch.autograd.grad(fused.sum() * 1.7, params)
    grid, _ = transform.sampling_grid(params)
    assert (grid.abs() > 1).any()  # some points outside: masked out
    reference = ncc(fixed, *warp_grid_inside(moving, grid))
    (reference_grad,) = torch.autograd.grad(reference.sum() * 1.7, params)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused_grad, reference_grad, rtol=1e-4, atol=1e-6 * reference_grad.abs().max().item())


def test_lattice_warped_ncc_rejects_params_and_bands_of_another_shape():
    transform = BSplineTransform((40, 36), lattice=(9, 7))
    fixed = torch.rand(2, 1, 40, 36)
    with pytest.raises(ValueError, match=r"params must have shape \(2, 2, Kx, Ky\), got \(3, 2, 9, 7\)"):
        kernels.lattice_warped_ncc(fixed, fixed, transform.zeros(3), transform.bands)
    with pytest.raises(ValueError, match="bands are for 40x36 images and 9x7 control points, got 40x36 images and params \\(2, 2, 9, 8\\)"):
        kernels.lattice_warped_ncc(fixed, fixed, torch.zeros(2, 2, 9, 8), transform.bands)
    with pytest.raises(ValueError, match="bands are for 40x36 images and 9x7 control points, got 30x36 images"):
        kernels.lattice_warped_ncc(fixed[..., :30, :], fixed[..., :30, :], transform.zeros(2), transform.bands)


SETTINGS = {
    "ncc": RegistrationSettings(lattice=(10, 10), lr=5e-3, iterations=60, lam=1.0),
    "paper": RegistrationSettings.paper(iterations=60, lr=5e-3),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_registration_equals_the_torch_path(name, torch_path):
    fixed, moving, _ = known_pair()

    def register(moving_image):
        return register_pairs(fixed, moving_image, SETTINGS[name], spacing=(1.0, 1.0), device="cpu", progress_every_s=None)

    fused = register(moving)
    with torch_path():
        reference = register(moving)
        nudged = register(moving * (1 + 1e-7))  # the torch path itself, inputs moved by float32 rounding (1 ulp)
    largest = np.abs(reference.displacement_mm).max()
    assert largest > 0.5  # it moved
    # 60 Adam steps amplify rounding: the fused run may differ from the torch run by
    # as much as the torch run differs from itself under 1-ulp changes of the image.
    conditioning = np.abs(nudged.displacement_mm - reference.displacement_mm).max()
    assert conditioning < 1e-4 * largest
    np.testing.assert_allclose(fused.displacement_mm, reference.displacement_mm, rtol=0, atol=max(1e-5, 2 * conditioning))
    np.testing.assert_allclose(fused.loss, reference.loss, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_fused_batches_equal_single_runs_at_any_thread_count(name):
    fixed, moving, _ = known_pair()
    pairs = torch.cat([fixed, moving, torch.flip(fixed, dims=(-1,))]), torch.cat([moving, fixed, torch.flip(moving, dims=(-1,))])
    settings = RegistrationSettings.from_dict({**SETTINGS[name].to_dict(), "iterations": 15})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        batch = register_pairs(*pairs, settings, device="cpu", progress_every_s=None)
        torch.set_num_threads(1)
        single = [register_pairs(f[None], m[None], settings, device="cpu", progress_every_s=None) for f, m in zip(*pairs)]
    finally:
        torch.set_num_threads(threads)
    for b, run in enumerate(single):  # the kernels split work by pair; torch's matmuls may round differently per shape
        np.testing.assert_allclose(batch.displacement_mm[b], run.displacement_mm[0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(batch.loss[b], run.loss[0], rtol=0, atol=1e-6)


def test_a_reused_workspace_gives_what_a_fresh_one_gives():
    """The loop's workspace is overwritten by each forward: every call, backward included, matches a fresh one."""
    workspace = kernels.Workspace()
    kept = []
    for seed, batch in ((2, 3), (3, 3), (4, 2)):  # the last changes the batch: new buffers
        generator = torch.Generator().manual_seed(seed)
        fixed, moving = torch.rand(batch, 1, 24, 20, generator=generator), torch.rand(batch, 1, 24, 20, generator=generator)
        planes = random_field(batch, (24, 20), 0.1, seed=seed) + identity_planes(24, 20, torch.float32, torch.device("cpu"))
        results = []
        for space in (workspace, None):
            field = planes.clone().requires_grad_()
            value = kernels.warped_ncc(fixed, moving, field, space)
            (grad,) = torch.autograd.grad(value.sum(), field)
            results.append((value, grad))
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
        kept.append(results)
    for reused, fresh in kept:  # later calls on the workspace leave earlier gradients alone
        torch.testing.assert_close(reused, fresh, rtol=0, atol=0)


def test_a_reused_workspace_gives_the_lattice_node_what_a_fresh_one_gives():
    workspace = kernels.Workspace()
    kept = []
    for seed, batch, lattice in ((2, 3, (9, 7)), (3, 3, (9, 7)), (4, 2, (6, 5))):  # the last changes every buffer's shape
        generator = torch.Generator().manual_seed(seed)
        fixed, moving = torch.rand(batch, 1, 24, 20, generator=generator), torch.rand(batch, 1, 24, 20, generator=generator)
        transform = BSplineTransform((24, 20), lattice=lattice)
        params = 0.05 * torch.randn(batch, 2, *lattice, generator=generator)
        results = []
        for space in (workspace, None):
            leaf = params.clone().requires_grad_()
            value = kernels.lattice_warped_ncc(fixed, moving, leaf, transform.bands, space)
            (grad,) = torch.autograd.grad(value.sum(), leaf)
            results.append((value, grad))
        torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
        kept.append(results)
    for reused, fresh in kept:
        torch.testing.assert_close(reused, fresh, rtol=0, atol=0)

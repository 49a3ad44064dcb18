"""bf16 autocast of the encoder (chosen per device, run on CPU here; features and losses stay float32) and compile."""

import sys
from pathlib import Path

import pytest
import torch

from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.registration.bspline import BSplineTransform
from featreg.registration.optimize import pair_objective
from featreg.registration.regularisers import regulariser_weights
from featreg.registration.settings import RegistrationSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "registration"))
from registration_helpers import known_pair  # noqa: E402

TINY = {"kind": "dinov2", "random_init": True, "seed": 2, "input_size": 112, "grid": 16,
        "arch": {"embed_dim": 96, "depth": 2, "num_heads": 3}}  # fmt: skip


def tiny(dtype):
    return build_encoder(EncoderSpec.from_dict("tiny", {**TINY, "dtype": dtype}))


@pytest.mark.parametrize(
    ("kind", "dtype", "device", "expected"),
    [
        ("dinov2", "auto", "cuda", "bf16"),
        ("sam", "auto", "cuda", "bf16"),
        ("dinov2", "auto", "cpu", "float32"),
        ("mind", "auto", "cuda", "float32"),
        ("sam", "float32", "cuda", "float32"),
        ("dinov2", "bf16", "cpu", "bf16"),
    ],
)
def test_compute_dtype_is_bf16_by_default_only_for_learnt_weights_on_cuda(kind, dtype, device, expected):
    entry = {"kind": kind, "dtype": dtype} | ({} if kind == "mind" else {"random_init": True})
    assert EncoderSpec.from_dict("e", entry).compute_dtype(device) == expected


def test_bf16_runs_the_backbone_in_bf16_and_returns_float32_features():
    bf16, fp32 = tiny("bf16"), tiny("float32")
    seen = []
    bf16.backbone.vit.blocks[0].attn.qkv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = bf16(x)
    assert seen == [torch.bfloat16]
    assert out.dtype == torch.float32
    assert bf16.identity()["dtype"] == "bf16" and fp32.identity()["dtype"] == "float32"
    reference = fp32(x.detach())
    relative = (out.detach() - reference).norm() / reference.norm()
    assert 0 < relative < 0.05  # bf16 rounding: different, but close
    out.square().mean().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_feature_loss_and_its_gradient_stay_float32_and_close_under_bf16():
    fixed, moving, _ = known_pair()
    settings = RegistrationSettings(lattice=(6, 6), alpha=1.0, feature_distance="cosine")
    transform = BSplineTransform((64, 64), lattice=settings.lattice, order=settings.order)
    weights = regulariser_weights(settings.regulariser, (64, 64), (1.8, 1.8)).float()
    terms, grads = [], []
    for encoder in (tiny("bf16"), tiny("float32")):
        params = transform.zeros(1).requires_grad_(True)
        with torch.no_grad():
            fixed_features = encoder(fixed)
        total, image, feature, reg = pair_objective(transform, params, fixed, moving, settings, weights,
                                                    encoder=encoder, fixed_features=fixed_features)  # fmt: skip
        assert feature.dtype == total.dtype == torch.float32
        total.sum().backward()
        assert params.grad.dtype == torch.float32
        terms.append(feature.detach())
        grads.append(params.grad.flatten())
    torch.testing.assert_close(terms[0], terms[1], rtol=1e-3, atol=0)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_compiling_the_backbone_keeps_its_parameter_names():
    """compute.compile compiles the backbone in place (compiled on first call), so checkpoints and caches see the same keys."""
    encoder = tiny("float32")
    keys = list(encoder.state_dict())
    encoder.backbone.compile()
    assert list(encoder.state_dict()) == keys

"""Fused attention equals the reference modules (segment-anything's and timm's unfused paths) in fp32."""

import copy

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.encoders.sam import VIT_B
from featreg.encoders.sam_attention import FusedRelPosAttention

TOLERANCE = dict(atol=1e-4, rtol=1e-4)
# Tiny models at 224 px: 14 × 14 tokens, so 8-token windows are padded to 16 × 16. Full-size
# models at 112 px (7 × 7 SAM tokens, 8 × 8 DINOv2 patches) keep the test short; SAM's 14-token
# windows are then padded too.
TINY_SAM = {"embed_dim": 96, "depth": 3, "num_heads": 3, "window_size": 8, "global_attn_indexes": [1]}
TINY_DINOV2 = {"embed_dim": 96, "depth": 2, "num_heads": 3}


def spec(kind, arch, input_size=224):
    return EncoderSpec.from_dict(kind, {"kind": kind, "random_init": True, "seed": 1, "input_size": input_size, "grid": None, "arch": arch})


def randomise_rel_pos(encoder):
    """segment-anything zero-initialises relative positions; random values make the bias term count."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in encoder.backbone.named_parameters():
            if "rel_pos" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


def sam_reference(encoder):
    """The same weights with segment-anything's own attention."""
    reference = copy.deepcopy(encoder)
    for module in reference.modules():
        if type(module) is FusedRelPosAttention:
            module.__class__ = Attention
    return reference


def timm_reference(encoder):
    reference = copy.deepcopy(encoder)
    for module in reference.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return reference


def image(size=40, seed=0):
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_sam_block_is_fused_and_keeps_its_parameter_names():
    encoder = build_encoder(spec("sam", TINY_SAM))
    blocks = [m for m in encoder.modules() if isinstance(m, Attention)]
    assert len(blocks) == TINY_SAM["depth"] and all(type(m) is FusedRelPosAttention for m in blocks)
    reference = sam_reference(encoder)
    assert list(encoder.state_dict()) == list(reference.state_dict())


@pytest.mark.parametrize(("arch", "size"), [(TINY_SAM, 224), (VIT_B, 112)], ids=["tiny", "vit_b"])
def test_sam_fused_attention_equals_segment_anything(arch, size):
    encoder = build_encoder(spec("sam", arch, size))
    randomise_rel_pos(encoder)
    reference = sam_reference(encoder)
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x), **TOLERANCE)


def test_sam_fused_attention_gradient_equals_segment_anything():
    """In float64, where both paths are exact to rounding: the input gradients (of order 1e-9 here)
    agree relative to their own scale (in float32 each is ~3 % from the float64 gradient)."""
    encoder = build_encoder(spec("sam", TINY_SAM))
    randomise_rel_pos(encoder)
    reference = sam_reference(encoder)
    grads = []
    for model in (encoder, reference):  # the backbones: FeatureEncoder computes in float32
        x = encoder.preprocess(image()).double().requires_grad_(True)
        model.backbone.double()(x).square().mean().backward()
        grads.append(x.grad)
    scale = grads[1].abs().max()
    assert scale > 0
    assert (grads[0] - grads[1]).abs().max() <= 1e-8 * scale


@pytest.mark.parametrize(("arch", "size"), [(TINY_DINOV2, 224), ({}, 112)], ids=["tiny", "vit_b"])
def test_dinov2_fused_attention_equals_timm_unfused(arch, size):
    encoder = build_encoder(spec("dinov2", arch, size))
    assert all(m.fused_attn for m in encoder.modules() if hasattr(m, "fused_attn"))
    reference = timm_reference(encoder)
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), reference(x), **TOLERANCE)

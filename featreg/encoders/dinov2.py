"""DINOv2 ViT with registers, built by timm, loading the original DINOv2 checkpoint layout."""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from featreg.encoders.checkpoints import CheckpointError, load_checkpoint_state
from featreg.encoders.features import Backbone, LayerSet, seeded, weights_label
from featreg.encoders.registry import EncoderSpec

DEFAULT_MODEL = "vit_base_patch14_reg4_dinov2"
DEFAULT_INPUT = 896  # 128 px × 7 → 64 × 64 patches of 14 px


class DenseTokens(nn.Module):
    """A timm ViT whose final-normed patch tokens (prefix tokens dropped) are returned as ``(B, C, h, w)``."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]
        h, w = self.vit.patch_embed.dynamic_feat_size(x.shape[-2:])
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class Intermediates(nn.Module):
    """A timm model's feature outputs at ``indices`` (ViT: blocks, each through the final norm, so the
    last block is :class:`DenseTokens`'s map), by timm's own ``forward_intermediates``, as ``(B, C, h, w)``."""

    def __init__(self, model: nn.Module, indices: tuple[int, ...]):
        super().__init__()
        self.model = model
        self.indices = list(indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, indices=self.indices, norm=True, stop_early=True, output_fmt="NCHW", intermediates_only=True
        )


def timm_layers(model: nn.Module) -> LayerSet:
    """A timm model's selectable layers: its ``feature_info`` (a ViT's blocks, a CNN's stages)."""
    info = model.feature_info
    return LayerSet(
        names=tuple(f["module"] for f in info),
        channels=tuple(f["num_chs"] for f in info),
        select=lambda indices: Intermediates(model, tuple(indices)),
    )


def fuse_timm_attention(model: nn.Module) -> nn.Module:
    """Turn on timm's fused attention (``scaled_dot_product_attention``) in every block, whatever ``TIMM_FUSED_ATTN`` says."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    return model


def load_timm_state(vit: nn.Module, state: dict, path: object, filter_fn=checkpoint_filter_fn) -> None:
    """Convert a checkpoint with timm's filter (key layout, position embedding size) and load it strictly."""
    state = filter_fn(state, vit) if filter_fn is not None else state
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(vit).__name__}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )


def build_dinov2(spec: EncoderSpec) -> Backbone:
    """ViT-B/14 with 4 registers (or ``spec.model``) at ``spec.input_size`` (default 896); ``arch`` overrides."""
    size = spec.input_size or DEFAULT_INPUT
    with seeded(spec.seed):
        vit = timm.create_model(spec.model or DEFAULT_MODEL, pretrained=False, num_classes=0, img_size=size, **spec.arch)
    sha = None
    if not spec.random_init and spec.checkpoint is not None:
        state, sha = load_checkpoint_state(spec.checkpoint, sha256=spec.sha256)
        load_timm_state(vit, state, spec.checkpoint)
    vit = fuse_timm_attention(vit)
    return Backbone(DenseTokens(vit), in_chans=3, input_size=size, weights=weights_label(spec, sha), layers=timm_layers(vit))

"""Any timm model with a local checkpoint, its dense output as a feature map."""

from __future__ import annotations

import sys

import timm
import torch
from torch import nn

from featreg.encoders.checkpoints import load_checkpoint_state
from featreg.encoders.dinov2 import DenseTokens, fuse_timm_attention, load_timm_state, timm_layers
from featreg.encoders.features import Backbone, seeded, weights_label
from featreg.encoders.registry import EncoderSpec


class DenseMap(nn.Module):
    """A timm CNN-like model whose ``forward_features`` is already a spatial map (NCHW or NHWC)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(x)
        if str(getattr(self.model, "output_fmt", "NCHW")) in ("NHWC", "Format.NHWC"):
            out = out.permute(0, 3, 1, 2)
        return out


def build_timm(spec: EncoderSpec) -> Backbone:
    """``timm.create_model(spec.model, pretrained=False)``, its checkpoint loaded through the model's own filter.

    Its selectable layers are timm's ``feature_info`` (blocks of a ViT, stages of a CNN).
    """
    kwargs = dict(spec.arch)
    with seeded(spec.seed):
        model = timm.create_model(spec.model, pretrained=False, num_classes=0, **kwargs)
    is_vit = hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
    size = spec.input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if is_vit and spec.input_size is not None:  # a ViT's position embedding is built for one size
        with seeded(spec.seed):
            model = timm.create_model(spec.model, pretrained=False, num_classes=0, img_size=size, **kwargs)
    sha = None
    if not spec.random_init and spec.checkpoint is not None:
        state, sha = load_checkpoint_state(spec.checkpoint, sha256=spec.sha256)
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        load_timm_state(model, state, spec.checkpoint, filter_fn=filter_fn)
    fuse_timm_attention(model)
    module = DenseTokens(model) if is_vit else DenseMap(model)
    return Backbone(module, in_chans=3, input_size=size, weights=weights_label(spec, sha), layers=timm_layers(model))

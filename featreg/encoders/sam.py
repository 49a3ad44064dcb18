"""SAM / MedSAM ViT image encoder from segment-anything: 1024 px in, 256 × 64 × 64 neck out."""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT

from featreg.encoders.checkpoints import CheckpointError, load_checkpoint_state
from featreg.encoders.features import Backbone, HookedOutputs, LayerSet, seeded, weights_label
from featreg.encoders.registry import EncoderSpec
from featreg.encoders.sam_attention import fuse_sam_attention
from featreg.errors import ConfigError

# segment-anything's vit_b image encoder (build_sam.py), overridable through ``arch``.
VIT_B = dict(
    embed_dim=768,
    depth=12,
    num_heads=12,
    global_attn_indexes=(2, 5, 8, 11),
    window_size=14,
    patch_size=16,
    mlp_ratio=4,
    out_chans=256,
    qkv_bias=True,
    use_rel_pos=True,
)
DEFAULT_INPUT = 1024
_PREFIX = "image_encoder."


def image_encoder_state(state: dict) -> dict:
    """The image encoder's keys of a full SAM state dict (prefix removed); an encoder-only dict passes through."""
    if any(k.startswith(_PREFIX) for k in state):
        return {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    return state


def _as_map(name: str, out: torch.Tensor) -> torch.Tensor:
    """A block's ``(B, h, w, C)`` tokens, or the neck's ``(B, C, h, w)`` map, as ``(B, C, h, w)``."""
    return out if name == "neck" else out.permute(0, 3, 1, 2)


def sam_layers(encoder: ImageEncoderViT) -> LayerSet:
    """The blocks (``embed_dim`` channels) and the neck (``out_chans``), in order; the neck is the encoder's output."""
    names = tuple(f"blocks.{i}" for i in range(len(encoder.blocks))) + ("neck",)
    channels = tuple(block.norm1.normalized_shape[0] for block in encoder.blocks) + (encoder.neck[0].out_channels,)
    return LayerSet(names, channels, lambda indices: HookedOutputs(encoder, [names[i] for i in indices], _as_map))


def build_sam(spec: EncoderSpec) -> Backbone:
    """segment-anything's ``ImageEncoderViT`` (vit_b unless ``arch`` overrides) at ``input_size`` (default 1024).

    The encoder accepts exactly its ``img_size``; its position embeddings are
    built for it, so a checkpoint only loads at the size it was trained at.
    Its attention blocks run fused (:mod:`featreg.encoders.sam_attention`).
    Selectable layers: its blocks, then the neck (:func:`sam_layers`).
    """
    if "img_size" in spec.arch:
        raise ConfigError(f"encoder {spec.name!r}: set input_size, not arch.img_size, for kind 'sam'")
    size = spec.input_size or DEFAULT_INPUT
    arch = {**VIT_B, **spec.arch}
    arch["global_attn_indexes"] = tuple(arch["global_attn_indexes"])
    with seeded(spec.seed):
        encoder = ImageEncoderViT(img_size=size, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **arch)
    sha = None
    if not spec.random_init and spec.checkpoint is not None:
        state, sha = load_checkpoint_state(spec.checkpoint, sha256=spec.sha256)
        try:
            encoder.load_state_dict(image_encoder_state(state), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {spec.checkpoint} does not fit the SAM image encoder at input {size}: {exc}") from exc
    encoder = fuse_sam_attention(encoder)
    return Backbone(encoder, in_chans=3, input_size=size, weights=weights_label(spec, sha), layers=sam_layers(encoder))

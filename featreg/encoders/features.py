"""The frozen feature encoder every kind is wrapped in: grey image in, common feature grid out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import featreg
from featreg.encoders.registry import EncoderSpec, kind_factory

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """What a kind's factory returns.

    ``module`` maps ``(B, in_chans, S, S)`` to a dense map ``(B, C, h, w)``;
    ``input_size`` is S (None: any size, the image's own); ``weights`` is
    ``"sha256:<hex>"`` of the loaded checkpoint, ``"random:<seed>"`` or ``"none"``.
    """

    module: nn.Module
    in_chans: int
    input_size: int | None
    weights: str


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def weights_label(spec: EncoderSpec, sha256: str | None) -> str:
    return f"random:{spec.seed}" if spec.random_init else (f"sha256:{sha256}" if sha256 else "none")


class FeatureEncoder(nn.Module):
    """Frozen encoder: ``(B, 1, X, Y)`` in [0, 1] → ``(B, C, g, g)`` float32.

    Grey is repeated to the backbone's channels, resized bilinearly to its input
    size, optionally ImageNet-normalised, encoded (eval mode, parameters frozen,
    still differentiable with respect to the image) and resized to the grid.
    The backbone runs under bf16 autocast when :meth:`EncoderSpec.compute_dtype`
    says so on the current device; its output, and all that follows, is float32.
    """

    def __init__(self, spec: EncoderSpec, backbone: Backbone):
        super().__init__()
        self.spec = spec
        self.backbone = backbone.module
        self.in_chans = backbone.in_chans
        self.input_size = backbone.input_size
        self.weights = backbone.weights
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN[: self.in_chans]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD[: self.in_chans]).view(1, -1, 1, 1), persistent=False)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureEncoder":
        """Always eval: the backbone is frozen (dropout off, batch-norm statistics fixed)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def compute_dtype(self) -> str:
        """``"bf16"`` or ``"float32"``: the backbone's arithmetic on the device it is on now."""
        return self.spec.compute_dtype(self.device.type)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the features, for cache validation."""
        s = self.spec
        return {
            "kind": s.kind,
            "name": s.name,
            "weights": self.weights,
            "model": s.model,
            "arch": dict(sorted(s.arch.items())),
            "input_size": self.input_size,
            "grid": s.grid,
            "normalisation": s.normalisation,
            "dtype": self.compute_dtype,
            "featreg_version": featreg.__version__,
        }

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Grey → backbone channels, resized and normalised as the spec says."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected an image batch of shape (B, 1, X, Y), got {tuple(image.shape)}")
        x = image.to(self.device, torch.float32).expand(-1, self.in_chans, -1, -1)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.spec.normalisation == "imagenet":
            x = (x - self.mean) / self.std
        return x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(image)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.compute_dtype == "bf16"):
            feats = self.backbone(x)
        feats = feats.float()
        g = self.spec.grid
        if g is not None and tuple(feats.shape[-2:]) != (g, g):
            feats = F.interpolate(feats, size=(g, g), mode="bilinear", align_corners=False)
        return feats


def build_encoder(spec: EncoderSpec, device: str = "cpu") -> FeatureEncoder:
    """Build the frozen, eval-mode feature encoder that ``spec`` describes, on ``device``."""
    return FeatureEncoder(spec, kind_factory(spec)(spec)).to(device)

"""The frozen feature encoder every kind is wrapped in: grey image in, common feature grid out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import featreg
from featreg.encoders.layers import check_layer_range
from featreg.encoders.registry import WEIGHTLESS, EncoderSpec, kind_factory
from featreg.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The image side used to list layer grids of a kind that takes the image's own size (the preprocessed side).
DEFAULT_IMAGE_SIDE = 128


@dataclass
class LayerSet:
    """A backbone's selectable outputs, in index order: ``names`` (its module paths),
    ``channels``, and ``select(indices)``, a module mapping the backbone's input to the
    list of those outputs, each ``(B, C_i, h_i, w_i)``."""

    names: tuple[str, ...]
    channels: tuple[int, ...]
    select: Callable[[Sequence[int]], nn.Module]


@dataclass
class Backbone:
    """What a kind's factory returns.

    ``module`` maps ``(B, in_chans, S, S)`` to a dense map ``(B, C, h, w)`` (or a list
    of maps, see :class:`FeatureEncoder`); ``input_size`` is S (None: any size, the
    image's own); ``weights`` is ``"sha256:<hex>"`` of the loaded checkpoint,
    ``"random:<seed>"`` or ``"none"``; ``layers`` lists what ``layers:`` can select
    (None: nothing, as for MIND).
    """

    module: nn.Module
    in_chans: int
    input_size: int | None
    weights: str
    layers: LayerSet | None = None


class HookedOutputs(nn.Module):
    """Runs ``module`` and returns the outputs of its submodules ``taps`` (module paths, in execution
    order), each made ``(B, C, h, w)`` by ``to_map(name, output)``.

    The hooks exist only during a call, so the module's other users see no hook.
    """

    def __init__(self, module: nn.Module, taps: Sequence[str], to_map: Callable[[str, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.module = module
        self.taps = tuple(taps)
        self.to_map = to_map

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        handles = [
            self.module.get_submodule(name).register_forward_hook(
                lambda _module, _args, out, name=name: outputs.append(self.to_map(name, out))
            )
            for name in self.taps
        ]
        try:
            self.module(x)
        finally:
            for handle in handles:
                handle.remove()
        return outputs


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

    With ``spec.layers`` the backbone returns the selected layers; each is resized
    to the grid and they are concatenated along channels in index order.
    ``layer_splits`` (their channel counts) and ``layer_weights`` are then what
    :func:`featreg.registration.losses.layered_distance` needs; both are None without layers.
    """

    def __init__(self, spec: EncoderSpec, backbone: Backbone):
        super().__init__()
        self.spec = spec
        self.layer_splits: tuple[int, ...] | None = None
        self.layer_weights: tuple[float, ...] | None = None
        if spec.layers is None:
            self.backbone = backbone.module
        else:
            if backbone.layers is None:
                raise ConfigError(f"encoder {spec.name!r}: kind {spec.kind!r} has no layers to select")
            check_layer_range(f"encoder {spec.name!r}", spec.kind, spec.layers, len(backbone.layers.names))
            self.backbone = backbone.layers.select(spec.layers)
            self.layer_splits = tuple(backbone.layers.channels[i] for i in spec.layers)
            self.layer_weights = spec.layer_weights or (1.0,) * len(spec.layers)
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
        """Everything that determines the features, for cache validation (``layers`` and
        ``layer_weights`` only where the spec gives them, so older caches stay valid)."""
        s = self.spec
        selection = {key: list(value) for key in ("layers", "layer_weights") if (value := getattr(s, key)) is not None}
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
            **selection,
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
        if isinstance(feats, torch.Tensor):
            return self.to_grid(feats)
        return torch.cat([self.to_grid(f) for f in feats], dim=1)

    def to_grid(self, feats: torch.Tensor) -> torch.Tensor:
        """A backbone map as float32 on the spec's grid (bilinear; unchanged when the grid is None or already met)."""
        feats = feats.float()
        g = self.spec.grid
        if g is not None and tuple(feats.shape[-2:]) != (g, g):
            feats = F.interpolate(feats, size=(g, g), mode="bilinear", align_corners=False)
        return feats


def build_encoder(spec: EncoderSpec, device: str = "cpu") -> FeatureEncoder:
    """Build the frozen, eval-mode feature encoder that ``spec`` describes, on ``device``."""
    return FeatureEncoder(spec, kind_factory(spec)(spec)).to(device)


@dataclass(frozen=True)
class LayerInfo:
    """One selectable layer of a kind: its index for ``layers:``, module path, channels and native grid (h, w)."""

    index: int
    name: str
    channels: int
    grid: tuple[int, int]


def kind_layers(kind: str, input_size: int | None = None, model: str | None = None) -> list[LayerInfo]:
    """The selectable layers of ``kind`` at its defaults (``input_size``, ``model`` as in a spec), from a random-weight build."""
    entry = {"kind": kind, "input_size": input_size, "model": model}
    if kind not in WEIGHTLESS:
        entry["random_init"] = True
    return selectable_layers(EncoderSpec.from_dict(kind, entry))


def selectable_layers(spec: EncoderSpec) -> list[LayerInfo]:
    """The layers ``spec``'s kind offers, measured by one forward pass of a zero image through its build.

    The image is ``spec.input_size`` square, or the kind's own input size, or
    :data:`DEFAULT_IMAGE_SIDE` for kinds that take the image's own size. Build
    ``spec`` with ``random_init`` to skip loading weights: the shapes do not depend on them.
    """
    backbone = kind_factory(spec)(spec)
    if backbone.layers is None:
        raise ConfigError(f"encoder {spec.name!r}: kind {spec.kind!r} has no layers to select")
    side = spec.input_size or backbone.input_size or DEFAULT_IMAGE_SIDE
    indices = range(len(backbone.layers.names))
    with torch.no_grad():
        maps = backbone.layers.select(indices).eval()(torch.zeros(1, backbone.in_chans, side, side))
    return [
        LayerInfo(i, backbone.layers.names[i], m.shape[1], (m.shape[2], m.shape[3])) for i, m in zip(indices, maps, strict=True)
    ]

"""MIND-SSC (Heinrich et al., MICCAI 2013) for 2D images, in torch: a handcrafted, differentiable baseline.

The 3D descriptor compares patches around the six face neighbours of a voxel
(12 pairs at distance √2·d). The 2D analogue used here keeps 12 channels: the
8 neighbours at dilation d form a ring; its 8 edges (length d) plus the 4
pairs of axial neighbours (length √2·d). The centre is never used, as in SSC.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featreg.encoders.features import Backbone
from featreg.encoders.registry import EncoderSpec
from featreg.errors import ConfigError

_AXIAL = ((1, 0), (0, 1), (-1, 0), (0, -1))
# (axial, diagonal) ring edges, then consecutive axial pairs.
PAIRS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = tuple(
    [((ax, ay), (ax or s, ay or s)) for ax, ay in _AXIAL for s in (1, -1)]
    + [(_AXIAL[i], _AXIAL[(i + 1) % 4]) for i in range(4)]
)


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC of ``(B, 1, X, Y)`` images → ``(B, 12, X, Y)`` in (0, 1].

    Patch distances are box-filtered (side 2·radius+1) squared differences of
    the image shifted to each pair's two points; the descriptor is
    ``exp(-D / V)`` with V the mean of D over the 12 channels (clamped to
    [1e-3, 1e3] × its image mean), divided by its maximum over channels.
    Borders use replicate padding.
    """
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"expected an image batch of shape (B, 1, X, Y), got {tuple(image.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError(f"radius must be >= 0 and dilation >= 1, got radius={radius}, dilation={dilation}")
    pad = dilation + radius
    X, Y = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    n = 2 * radius  # each shifted map keeps the patch margin, then the box filter removes it

    def shifted(offset: tuple[int, int]) -> torch.Tensor:
        i0 = dilation + offset[0] * dilation
        j0 = dilation + offset[1] * dilation
        return padded[..., i0 : i0 + X + n, j0 : j0 + Y + n]

    sq = torch.cat([(shifted(p) - shifted(q)) ** 2 for p, q in PAIRS], dim=1)
    dist = F.avg_pool2d(sq, kernel_size=2 * radius + 1, stride=1)
    dist = dist - dist.amin(dim=1, keepdim=True)
    var = dist.mean(dim=1, keepdim=True)
    mean_var = var.mean(dim=(2, 3), keepdim=True)
    var = torch.maximum(torch.minimum(var, mean_var * 1e3), mean_var * 1e-3 + 1e-12)
    mind = torch.exp(-dist / var)
    return mind / mind.amax(dim=1, keepdim=True)


class MINDSSC(nn.Module):
    """``mind_ssc`` as a module (no parameters)."""

    def __init__(self, radius: int = 1, dilation: int = 2):
        super().__init__()
        self.radius, self.dilation = radius, dilation

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return mind_ssc(image, self.radius, self.dilation)


def build_mind(spec: EncoderSpec) -> Backbone:
    """MIND-SSC on the grey image (``arch``: radius, dilation); input_size None keeps the image size."""
    unknown = sorted(set(spec.arch) - {"radius", "dilation"})
    if unknown:
        raise ConfigError(f"encoder {spec.name!r}: kind 'mind' takes arch radius and dilation only, got {', '.join(unknown)}")
    return Backbone(MINDSSC(**spec.arch), in_chans=1, input_size=spec.input_size, weights="none")

"""Fused attention for segment-anything's ViT: one ``scaled_dot_product_attention`` call per block.

segment-anything's attention builds the full attention matrix and softmax by
hand; here its blocks (global and windowed) call
``torch.nn.functional.scaled_dot_product_attention`` with the decomposed
relative-position term as an additive bias, so CUDA runs a fused kernel (and
in bf16 under autocast). Swapping the module class keeps every parameter, so
checkpoints load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The additive attention bias of decomposed relative positions (MViTv2), ``(B, heads, N, N)``.

    ``q`` is ``(B, heads, N, C)`` over an ``H × W`` grid (N = H·W), unscaled;
    entry ``(n, m)`` is ``q_n · R_h[h(n) - h(m)] + q_n · R_w[w(n) - w(m)]``.
    """
    B, heads, N, C = q.shape
    H, W = size
    Rh = get_rel_pos(H, H, rel_pos_h).to(q.dtype)  # (H, H, C)
    Rw = get_rel_pos(W, W, rel_pos_w).to(q.dtype)  # (W, W, C)
    grid_q = q.reshape(B, heads, H, W, C)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, Rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, Rw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, heads, N, N)


class FusedRelPosAttention(Attention):
    """segment-anything's ``Attention`` (same parameters) computed by ``scaled_dot_product_attention``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (H, W)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.permute(0, 2, 1, 3).reshape(B, H, W, -1))


def fuse_sam_attention(encoder: nn.Module) -> nn.Module:
    """Switch every segment-anything attention block of ``encoder`` to the fused computation, in place."""
    for module in encoder.modules():
        if type(module) is Attention:
            module.__class__ = FusedRelPosAttention
    return encoder


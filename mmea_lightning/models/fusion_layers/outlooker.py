"""OutlookerAttention (VOLO, Yuan et al. 2021) and MPSEA's visual feed-forward block built around it.

MPSEA (Sec. 3.4.2) puts an OutlookerAttention module -- "local sliding window aggregation" -- inside the FFN of the
visual modality, ``x~^v = ReLU(OA(x^v W_1 + b_1)) W_2 + b_2``, and its ablations name a second, convolutional
enhancement in the same FFN (``w/o OA`` removes the OA, ``w/o OC`` removes OA *and* the convolution). Outlooker
attention works on a 2-D map, an entity's visual token is one vector; what is built here:

* the FFN's hidden vector ``u = x W_1 + b_1`` (``ffn_dim`` wide) is read as a ``channels x S x S`` map
  (``ffn_dim = channels * S * S``, 300 = 3 x 10 x 10 by default);
* OA: VOLO's outlook attention on that map (``kernel_size`` windows, stride 1, ``heads`` heads), added as a residual
  branch ``u <- u + OA(u)`` as in VOLO's Outlooker block (so that removing it leaves the plain FFN);
* OC: a depth-wise ``kernel_size x kernel_size`` convolution on the same map, also residual ``u <- u + DWConv(u)``
  (the convolution-enhanced FFN of CeiT / SegFormer's Mix-FFN) -- the paper names but does not describe it;
* then ``ReLU`` and ``W_2``. No residual / LayerNorm around the block: the paper computes the final visual
  embedding "directly by the feed-forward network".

timm's ``OutlookAttention`` is not a dependency of this project; :class:`OutlookAttention` follows VOLO's reference
implementation (the same computation), channels-first.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OutlookAttention", "VisualFeedForward"]


class OutlookAttention(nn.Module):
    """VOLO's outlook attention, stride 1: ``(B, C, S, S) -> (B, C, S, S)``.

    For every position the attention weights of its ``k x k`` window are predicted from the position itself
    (``Linear(C, heads * k^4)``, reshaped to ``(k^2, k^2)`` and softmaxed); the unfolded window values
    (``Linear(C, C)``) are aggregated with them, folded back (overlapping windows sum) and projected (``Linear(C, C)``).
    """

    def __init__(self, channels: int, heads: int = 1, kernel_size: int = 3):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels, self.heads, self.kernel_size = channels, heads, kernel_size
        self.padding = kernel_size // 2
        self.scale = (channels // heads) ** -0.5
        self.value = nn.Linear(channels, channels, bias=False)
        self.attn = nn.Linear(channels, kernel_size ** 4 * heads)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        k2, heads = self.kernel_size ** 2, self.heads
        positions = height * width
        tokens = x.permute(0, 2, 3, 1)  # (B, S, S, C)
        value = self.value(tokens).permute(0, 3, 1, 2)  # (B, C, S, S)
        value = F.unfold(value, self.kernel_size, padding=self.padding)  # (B, C k^2, P)
        value = value.view(batch, heads, channels // heads, k2, positions).permute(0, 1, 4, 3, 2)  # (B, h, P, k2, c)
        attn = self.attn(tokens).view(batch, positions, heads, k2, k2).permute(0, 2, 1, 3, 4)  # (B, h, P, k2, k2)
        attn = (attn * self.scale).softmax(dim=-1)
        out = (attn @ value).permute(0, 1, 4, 3, 2).reshape(batch, channels * k2, positions)
        out = F.fold(out, (height, width), self.kernel_size, padding=self.padding)  # (B, C, S, S)
        return self.proj(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class VisualFeedForward(nn.Module):
    """MPSEA's visual FFN: ``(B, d) -> (B, d)``, ``ReLU(OC(OA(x W_1 + b_1))) W_2 + b_2`` (see the module docstring).

    Args:
        dim: token width; ffn_dim: hidden width (``channels * S^2`` for a square ``S``).
        use_outlooker: the OA branch (off: ``w/o OA``); use_conv: the depth-wise convolution branch (off with OA:
            ``w/o OC``).
        channels / heads / kernel_size: the hidden map's channels, OA heads, window size (and the convolution's).
        dropout: after the ReLU.
    """

    def __init__(self, dim: int = 300, ffn_dim: int = 300, use_outlooker: bool = True, use_conv: bool = True,
                 channels: int = 3, heads: int = 1, kernel_size: int = 3, dropout: float = 0.0):
        super().__init__()
        side = math.isqrt(ffn_dim // channels) if ffn_dim % channels == 0 else 0
        if (use_outlooker or use_conv) and side * side * channels != ffn_dim:
            raise ValueError(f"the visual FFN reads its {ffn_dim}-d hidden vector as a channels x S x S map: ffn_dim "
                             f"must be channels ({channels}) times a square (e.g. ffn_dim=300 with channels=3)")
        self.channels, self.side = channels, side
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.outlooker = OutlookAttention(channels, heads, kernel_size) if use_outlooker else None
        self.conv = (nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
                     if use_conv else None)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.fc1(x)
        if self.outlooker is not None or self.conv is not None:
            grid = hidden.view(-1, self.channels, self.side, self.side)
            if self.outlooker is not None:
                grid = grid + self.outlooker(grid)
            if self.conv is not None:
                grid = grid + self.conv(grid)
            hidden = grid.reshape(hidden.shape)
        return self.fc2(self.dropout(F.relu(hidden)))

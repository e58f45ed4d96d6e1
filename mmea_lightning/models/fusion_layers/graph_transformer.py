"""MPSEA's graph-structure transformer (Sec. 3.4.1 of the MPSEA paper)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GraphStructureTransformer", "FeedForward"]


class FeedForward(nn.Module):
    """``(..., d) -> (..., d)``: two fully connected layers with a ReLU between them (the transformer FFN)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GraphStructureTransformer(nn.Module):
    """A transformer encoder layer over the entity's graph token: ``x^g (B, d) -> (x~^g (B, d), K_g (B, H, d_h),
    V_g (B, H, d_h), beta_g (B, H))``.

    Eq. 5 projects ``K_g = x^g W_k^g`` and ``V_g = x^g W_v^g`` (``H`` heads of ``d_h = d / H``); the MHA attends
    ``Q_g`` to ``K_g``; then ``x^ = LN(x + MHA(x))`` and ``x~ = LN(x^ + FFN(x^))`` (post-norm residual blocks).
    ``K_g, V_g`` are what MMPF injects into the text modalities (Eq. 6); ``beta_g`` -- the attention each head puts
    on the graph token -- feeds the graph's cross-modal weight (Eq. 9).

    The paper attends ``Q_g`` to ``K_g`` only ("unlike the graph structure transformer, [MMPF] performs cross-modal
    attention"), so per entity the sequence is the single graph token: the softmax over one key is exactly 1, hence
    ``beta_g = 1`` for every head and ``MHA(x) = (x W_v^g) W_o``. That is computed as such; ``W_q^g`` would get no
    gradient and is not built. (Attending across the entities of a batch instead would make an entity's embedding
    depend on its batch.)

    Args:
        dim: token width ``d``; heads: ``H`` (divides ``d``); ffn_dim: FFN hidden width; dropout: on the MHA and FFN
            outputs (and inside the FFN).
    """

    def __init__(self, dim: int = 300, heads: int = 5, ffn_dim: int = 300, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch = x.shape[0]
        keys = self.key(x).view(batch, self.heads, self.head_dim)
        values = self.value(x).view(batch, self.heads, self.head_dim)
        beta = x.new_ones(batch, self.heads)  # softmax over the single key of each head
        attended = (beta.unsqueeze(-1) * values).reshape(batch, self.dim)
        hidden = self.attn_norm(x + self.dropout(self.out(attended)))
        hidden = self.ffn_norm(hidden + self.dropout(self.ffn(hidden)))
        return hidden, keys, values, beta



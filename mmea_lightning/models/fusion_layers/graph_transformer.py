"""MPSEA's graph-structure transformer (Sec. 3.4.1 of the MPSEA paper)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GRAPH_ATTENTION_SCORES", "GraphStructureTransformer", "FeedForward"]

#: readings of the graph's attention weight ``beta_g`` (see :class:`GraphStructureTransformer`)
GRAPH_ATTENTION_SCORES = ("softmax", "score", "sigmoid")


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
    attention"), so per entity the sequence is the single graph token: the softmax over one key is exactly 1 and
    ``MHA(x) = (x W_v^g) W_o``, computed as such. (Attending across the entities of a batch instead would make an
    entity's embedding depend on its batch.)

    What ``beta_g`` is, the paper leaves open ("the dot product computation of Q_g and K_g [gives] the graph
    structure attention weight beta_g"); ``attention_score`` chooses:

    * ``"softmax"``: the attention probability, ``beta_g = 1`` for every head and entity. Eq. 9's ``s_g`` is then the
      constant ``sqrt(N_s)`` and the graph weight depends on the other modalities alone; with one other modality
      (``s_m1 <= sqrt(N_s)``) it cannot fall below 0.5 (learnt: 0.75 on DBP15K). ``W_q^g`` would get no gradient
      and is not built.
    * ``"score"``: the scaled dot product itself, ``beta_g^(i) = Q_g^(i) . K_g^(i) / sqrt(d_h)`` -- the quantity
      the paper names, learnt per entity through ``W_q^g, W_k^g`` (it feeds only Eq. 9). Unbounded and near 0 at
      initialisation, it starts the graph weight low (measured: slower and worse, below).
    * ``"sigmoid"`` (default): that score squashed to ``(0, 1)`` -- the attention the single key gets against an
      implicit zero-score "null" key, in the range of the ``m1`` modalities' attention terms, learnt per entity.

    Measured on DBP15K ZH-EN at 30% (validation MRR after 60 epochs): softmax 0.535 (learnt ``w_g`` 0.75), score
    0.502, sigmoid 0.599.

    Args:
        dim: token width ``d``; heads: ``H`` (divides ``d``); ffn_dim: FFN hidden width; dropout: on the MHA and FFN
            outputs (and inside the FFN); attention_score: the reading of ``beta_g`` (above).
    """

    def __init__(self, dim: int = 300, heads: int = 5, ffn_dim: int = 300, dropout: float = 0.1,
                 attention_score: str = "sigmoid"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        if attention_score not in GRAPH_ATTENTION_SCORES:
            raise ValueError(f"attention_score must be one of {GRAPH_ATTENTION_SCORES}, got {attention_score!r}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.attention_score = attention_score
        self.query = nn.Linear(dim, dim) if attention_score != "softmax" else None
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
        attended = values.reshape(batch, self.dim)  # softmax over the single key of each head = 1
        if self.query is None:
            beta = x.new_ones(batch, self.heads)
        else:
            queries = self.query(x).view(batch, self.heads, self.head_dim)
            beta = (queries * keys).sum(-1) / self.head_dim ** 0.5  # (B, H)
            if self.attention_score == "sigmoid":
                beta = beta.sigmoid()
        hidden = self.attn_norm(x + self.dropout(self.out(attended)))
        hidden = self.ffn_norm(hidden + self.dropout(self.ffn(hidden)))
        return hidden, keys, values, beta



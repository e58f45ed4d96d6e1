"""MPSEA's multi-modal pre-synergistic fusion transformer (MMPF, Sec. 3.4.2, Eq. 5-7 of the MPSEA paper)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmea_lightning.models.fusion_layers.graph_transformer import FeedForward
from mmea_lightning.models.fusion_layers.outlooker import VisualFeedForward

__all__ = ["PreSynergisticFusion"]

VISUAL = "image"


class PreSynergisticFusion(nn.Module):
    """Cross-modal attention over the non-graph modality tokens of each entity, with graph and visual keys/values
    injected into the text modalities' keys/values.

    ``tokens (M1, B, d)`` (modality-major: the ``m1`` modalities, text modalities -- relation, attribute, numeric,
    names -- first, ``image`` last), the graph keys/values ``(B, H, d_h)`` of :class:`GraphStructureTransformer` and
    the ``present (B, M1)`` mask -> ``(late tokens (M1, B, d), beta (B, H, M1))``.

    * Eq. 5: per-modality projections ``Q_m, K_m, V_m = x^m W_{q,k,v}^m`` (``H`` heads of ``d_h = d / H``).
    * Eq. 6 (pre-synergy): the text modalities' key/value set ``{K_m2}`` is extended with ``lambda_g * K_g`` and
      ``lambda_v * K_v`` (and the values alike), ``lambda_g, lambda_v`` learnable scalars (init 1). Read as prefix
      tuning ("multi-modal prefix guidance", Algorithm 1): the injected entries are extra key/value slots of the
      attention, so the key set is ``[K_m for every m1 modality] + [lambda_g K_g] + [lambda_v K_v]`` (the text
      modalities' identical copies of an injected slot collapse into one slot).
    * Eq. 7: every ``m1`` in ``{r, a, n, v}`` queries that fused key set (``beta_{m1,z}`` = softmax over ``z``; the
      sum of Eq. 7 runs over the ``m1`` modalities, so the image's own key ``K_v`` is a key like ``K_r``), heads
      concatenated through one ``W_o``, then ``LN(x + MHA(x))``. ``w/o MMPF-img`` removes the injected
      ``lambda_v K_v`` slot only; the image stays a modality of the cross-modal attention.
    * FFN: text modalities through a shared FFN with residual + LayerNorm (as the graph transformer); the visual
      modality through :class:`VisualFeedForward` (OutlookerAttention and the convolution), "directly".
    * ``beta`` (for the cross-modal weights, Eq. 8): per head, the attention each ``m1`` *receives*, summed over the
      queries -- the column of its own key (the injected slots belong to the text modalities' extended keys, Eq. 6,
      and count for no single modality).

    Missing data (``present`` False, e.g. an entity without numeric values): that modality's key column is masked
    out for every query except its own (a query always keeps at least one key); a row left with no key at all is
    unmasked rather than turned into NaN.

    Args:
        modalities: the ``m1`` modality names (at least one), text modalities first, ``image`` (if any) last.
        dim / heads / ffn_dim / dropout: token width, MMPF heads, FFN width, dropout on attention and FFN outputs.
        inject_graph / inject_visual: the two halves of the pre-synergy (off: ``w/o MMPF-gph`` / ``w/o MMPF-img``).
        visual_ffn: keyword arguments of :class:`VisualFeedForward` (``use_outlooker``, ``use_conv``, ``channels``,
            ``heads``, ``kernel_size``).
    """

    def __init__(self, modalities: Sequence[str], dim: int = 300, heads: int = 5, ffn_dim: int = 300,
                 dropout: float = 0.1, inject_graph: bool = True, inject_visual: bool = True,
                 visual_ffn: dict | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.modalities = list(modalities)
        if VISUAL in self.modalities[:-1]:
            raise ValueError(f"MMPF takes the text modalities first and {VISUAL!r} last, got {self.modalities}")
        self.has_visual = bool(self.modalities) and self.modalities[-1] == VISUAL
        self.num_text = len(self.modalities) - int(self.has_visual)
        self.inject_graph = inject_graph
        self.inject_visual = inject_visual and self.has_visual
        if not self.modalities:
            raise ValueError("MMPF needs at least one m1 modality (relation, attribute, numeric, names, image)")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        num_m1 = len(self.modalities)
        # W_q^m, W_k^m, W_v^m of every modality (Eq. 5), applied as one batched product
        self.qkv_weight = nn.Parameter(torch.empty(num_m1, dim, 3 * dim))
        self.qkv_bias = nn.Parameter(torch.empty(num_m1, 1, 3 * dim))
        self.lambda_g = nn.Parameter(torch.ones(())) if inject_graph else None
        self.lambda_v = nn.Parameter(torch.ones(())) if self.inject_visual else None
        self.out = nn.Linear(dim, dim)  # W_o
        self.attn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.text_ffn = FeedForward(dim, ffn_dim, dropout) if self.num_text else None
        self.text_norm = nn.LayerNorm(dim) if self.num_text else None
        self.visual_ffn = (VisualFeedForward(dim, ffn_dim, dropout=dropout, **dict(visual_ffn or {}))
                           if self.has_visual else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.dim)  # nn.Linear's default initialisation, per modality
        nn.init.uniform_(self.qkv_weight, -bound, bound)
        nn.init.uniform_(self.qkv_bias, -bound, bound)

    def forward(self, tokens: Tensor, graph_kv: tuple[Tensor, Tensor] | None = None,
                present: Tensor | None = None) -> tuple[Tensor, Tensor]:
        num_m1, batch, _ = tokens.shape
        if num_m1 != len(self.modalities):
            raise ValueError(f"expected {len(self.modalities)} modality tokens, got {num_m1}")
        if self.inject_graph and graph_kv is None:
            raise ValueError("MMPF injects the graph keys/values: pass graph_kv (or build it with inject_graph=False)")
        present = tokens.new_ones(batch, num_m1, dtype=torch.bool) if present is None else present.bool()
        heads, head_dim, dim, text = self.heads, self.head_dim, self.dim, self.num_text
        qkv = torch.baddbmm(self.qkv_bias, tokens, self.qkv_weight)  # (M1, B, 3d)
        q, k, v = qkv.split(dim, dim=-1)  # split, not sliced: the backward concatenates, no zero-filled grads

        # every m1 modality's own key (Eq. 7), then the injected slots (Eq. 6)
        keys, values, key_present, owner = [k], [v], [present], list(range(num_m1))
        if self.inject_graph:  # Eq. 6: lambda_g K_g, lambda_g V_g
            keys.append(self.lambda_g * graph_kv[0].reshape(1, batch, dim))
            values.append(self.lambda_g * graph_kv[1].reshape(1, batch, dim))
            key_present.append(present.new_ones(batch, 1))
            owner.append(-1)
        if self.inject_visual:  # Eq. 6: lambda_v K_v, lambda_v V_v
            keys.append(self.lambda_v * k[text:])
            values.append(self.lambda_v * v[text:])
            key_present.append(present[:, text:])
            owner.append(-2)  # the injected image slot: not the image's own key
        keys = torch.cat(keys).view(-1, batch, heads, head_dim)  # (K, B, H, d_h)
        values = torch.cat(values).view(-1, batch, heads, head_dim)
        key_present = torch.cat(key_present, dim=1)  # (B, K)
        owner_t = torch.tensor(owner, device=tokens.device)  # the m1 index each key column belongs to (-1: graph)

        own = owner_t.unsqueeze(0) == torch.arange(num_m1, device=tokens.device).unsqueeze(1)  # (M1, K)
        allowed = key_present.unsqueeze(1) | own.unsqueeze(0)  # (B, M1, K)
        allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
        logits = torch.einsum("mbhd,kbhd->bhmk", q.view(num_m1, batch, heads, head_dim), keys) * head_dim ** -0.5
        logits = logits.masked_fill(~allowed.unsqueeze(1), float("-inf"))
        probs = logits.softmax(dim=-1)  # beta_{m1, z} (Eq. 7), (B, H, M1, K)
        attended = torch.einsum("bhmk,kbhd->mbhd", self.dropout(probs), values).reshape(num_m1, batch, dim)
        hidden = self.attn_norm(tokens + self.dropout(self.out(attended)))  # (M1, B, d)

        late = []
        if text:
            hidden_text = hidden[:text]
            late.append(self.text_norm(hidden_text + self.dropout(self.text_ffn(hidden_text))))
        if self.has_visual:
            late.append(self.visual_ffn(hidden[text]).unsqueeze(0))

        received = probs.sum(dim=2)  # (B, H, K): attention each key column receives, summed over the queries
        return torch.cat(late), received[..., :num_m1]  # the m1 modalities' own key columns

    def describe(self) -> dict:
        """The learnt injection weights."""
        return {"lambda_g": float(self.lambda_g.detach()) if self.lambda_g is not None else None,
                "lambda_v": float(self.lambda_v.detach()) if self.lambda_v is not None else None}

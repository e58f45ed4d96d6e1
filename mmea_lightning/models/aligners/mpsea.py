"""MPSEA (Li et al., CMC 2025, "Multi-Modal Pre-Synergistic Fusion Entity Alignment Based on Mutual Information
Strategy Optimization"; section and equation numbers below are the paper's; docs/mpsea.md lists our choices).

Pipeline (each piece is its own module, see there for the equations and the choices made where the paper is vague):

* encoders (Sec. 3.3) -- structure: a learnable entity table through the 2-layer, 2-head multi-weight GAT (Eq. 1,
  :class:`MultiWeightGATEncoder`); relation / attribute bags of words through FC layers (Eq. 2,
  :class:`FeatureHead`); image features through an FC layer (Eq. 3, :class:`VisualEncoder`); numeric values through
  DNEF (Eq. 4, :class:`DNEFEncoder`); every modality token 300-d;
* fusion (Sec. 3.4) -- the graph-structure transformer (:class:`GraphStructureTransformer`) gives the late graph
  embedding and the graph keys/values; MMPF (Eq. 5-7, :class:`PreSynergisticFusion`) injects them and the visual
  keys/values, weighted by learnable ``lambda_g, lambda_v``, into the text modalities' keys/values and runs the
  cross-modal attention of ``r, a, n, v`` (OutlookerAttention + convolution in the visual FFN); entity-level
  cross-modal weights (Eq. 8-9, :func:`cross_modal_weights`) give the early ``x^mu`` and late ``x~^mu`` joint
  embeddings by weighted concatenation;
* CPRL (Sec. 3.5, Eq. 10-13, :class:`CPRL`) on ``J = x~^mu`` and ``R`` = the concatenated late modality embeddings;
* loss (Sec. 3.6, Eq. 14-15): ``L_joi`` (ICL on the late joint embedding) + ``L_ICL`` (ICL of every modality before
  fusion) + ``L_LICL`` (after fusion) + ``L_RL``, a plain sum, with the shared :class:`ICLLoss` (MCLEA's, which the
  paper follows: temperature 0.1, in-batch negatives from both graphs, chunks of 512 links summed). ``L_LICL`` and
  ``L_joi`` share one set of per-modality similarity blocks (:meth:`MPSEA.paired_losses`), and CPRL's ``cos(J, R)``
  follows from the weights (:meth:`MPSEA.joint_reference_cosine`): the same numbers, less work.

Further choices:

* Missing data (``mask_missing``): an entity without relations / attributes / numeric values (or names) has that
  modality masked out of the MMPF keys, weight 0 in the joint embeddings, a zero block in ``R``, and its links are
  left out of that modality's ICL terms. Images follow Eq. 3 instead (stand-in vectors, never masked); with no image
  feature at all the visual modality is dropped and recorded, and with it the visual injection, OA and OC.
* Cross-modal weights: the graph's attention weight ``beta_g`` in Eq. 9 is ``sigmoid(Q_g . K_g / sqrt(d_h))`` per
  head (``graph_attention_score``; the softmax over the graph transformer's single key would make it 1 for every
  entity, see :class:`GraphStructureTransformer`).
* Evaluation ranks the L2-normalised late joint embedding ``x~^mu`` (the one the joint loss trains;
  ``eval_embedding="early"`` ranks ``x^mu``).
* Work: a training step embeds only the entities of its links (the GAT's last layer, the feature heads that
  matter, the fusion, CPRL and the losses); the GAT's first layer runs over the whole graph. :meth:`forward` embeds
  every entity, fusing in chunks of ``eval_chunk_size``.

The ``ablation`` switch gives the paper's variants (:data:`ABLATIONS`); ``describe()`` records which one ran and
whether it changed anything on this data (e.g. ``wo_oa`` without image features does not).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.modalities import describe_modalities, resolve_modalities
from mmea_lightning.models.aligners.base import Aligner
from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.multi_weight_gat import MultiWeightGATEncoder
from mmea_lightning.models.encoders.numeric import DNEFEncoder
from mmea_lightning.models.encoders.visual import VisualEncoder
from mmea_lightning.models.fusion_layers.cross_modal_weights import cross_modal_weights, weighted_concat
from mmea_lightning.models.fusion_layers.graph_transformer import GraphStructureTransformer
from mmea_lightning.models.fusion_layers.mmpf import PreSynergisticFusion
from mmea_lightning.models.losses.cprl import CPRL
from mmea_lightning.models.losses.icl import ICLLoss

__all__ = ["ABLATIONS", "MPSEA", "resolve_ablation"]

# config name -> (the paper's name, what it switches off). "drop" removes a modality.
ABLATIONS: dict[str, tuple[str, dict]] = {
    "wo_mmpf_img": ("w/o MMPF-img", {"inject_visual": False}),
    "wo_mmpf_gph": ("w/o MMPF-gph", {"inject_graph": False}),
    "wo_mmpf": ("w/o MMPF", {"inject_graph": False, "inject_visual": False}),
    "wo_oa": ("w/o OA", {"use_outlooker": False}),
    "wo_oc": ("w/o OC", {"use_outlooker": False, "use_conv": False}),
    "wo_cprl": ("w/o CPRL", {"use_cprl": False}),
    "repl_gat": ("repl.GAT", {"multi_weight_gat": False}),
    "wo_structure": ("w/o structure", {"drop": "structure"}),
    "wo_relation": ("w/o relation", {"drop": "relation"}),
    "wo_attr": ("w/o attr", {"drop": "attribute"}),
    "wo_img": ("w/o img", {"drop": "image"}),
    "wo_number": ("w/o number", {"drop": "numeric"}),
}
FULL_MODEL = (None, "none", "full")
STRUCTURE, VISUAL, NUMERIC = "structure", "image", "numeric"


def resolve_ablation(name: str | None) -> tuple[str | None, dict]:
    """``(config name or None, its switches)``; an unknown name is an error listing the valid ones."""
    if name in FULL_MODEL:
        return None, {}
    if name not in ABLATIONS:
        valid = ", ".join(f"{key} ({label})" for key, (label, _) in ABLATIONS.items())
        raise ValueError(f"unknown MPSEA ablation {name!r}. Valid: {valid}; or null for the full model "
                         "(e.g. model.ablation=wo_mmpf_img).")
    return name, dict(ABLATIONS[name][1])


class MPSEA(Aligner):
    """MPSEA's encoders, pre-synergistic fusion, CPRL and losses.

    Args:
        features: the pair's :class:`FeatureSet`.
        modalities: wanted modalities among ``structure``, ``relation``, ``attribute``, ``numeric``, ``image``.
        surface: add the name modalities (the "with surface" setting; text modalities for MMPF).
        ablation: ``None`` or a key of :data:`ABLATIONS`; applied on top of the switches below.
        dim: width of every modality token, the entity table and the GAT (300).
        gat: ``num_layers`` (2), ``heads`` (2), ``dropout``, ``attn_dropout`` of :class:`MultiWeightGATEncoder`.
        multi_weight_gat: Eq. 1's multi-weight GAT; ``False`` = plain GAT (``repl.GAT``).
        numeric_ffn_dim: DNEF's FFN width.
        fusion_heads / ffn_dim / fusion_dropout: heads (5), FFN width and dropout of the graph transformer and MMPF.
        graph_attention_score: the reading of the graph's attention weight ``beta_g`` in Eq. 9 (``sigmoid``,
            ``score`` or ``softmax``; see :class:`GraphStructureTransformer`).
        inject_graph / inject_visual: MMPF's graph / visual injection (``w/o MMPF-gph`` / ``w/o MMPF-img``).
        use_outlooker / use_conv: OA and the convolution in the visual FFN (``w/o OA`` / ``w/o OC``).
        outlooker: ``channels``, ``heads``, ``kernel_size`` of the visual FFN's map (see :class:`VisualFeedForward`).
        use_cprl: the CPRL loss (``w/o CPRL``); theta / alpha / beta / detach_state: its settings (:class:`CPRL`).
        temperature / chunk_size: the ICL temperature and in-batch-negative chunk.
        mask_missing: mask entities lacking a modality's data (see the module docstring).
        eval_embedding: ``late`` (``x~^mu``) or ``early`` (``x^mu``) joint embedding for ranking.
        eval_chunk_size: entities fused at once in :meth:`forward`.
        strict_modalities: a wanted modality the data lacks is an error (else dropped and recorded).
    """

    name = "MPSEA"

    def __init__(
        self,
        features: FeatureSet,
        modalities: Sequence[str] = ("structure", "relation", "attribute", "numeric", "image"),
        surface: bool = False,
        ablation: str | None = None,
        dim: int = 300,
        gat: Mapping | None = None,
        multi_weight_gat: bool = True,
        numeric_ffn_dim: int = 300,
        fusion_heads: int = 5,
        ffn_dim: int = 300,
        fusion_dropout: float = 0.0,
        graph_attention_score: str = "sigmoid",
        inject_graph: bool = True,
        inject_visual: bool = True,
        use_outlooker: bool = True,
        use_conv: bool = True,
        outlooker: Mapping | None = None,
        use_cprl: bool = True,
        theta: float = 0.63,
        alpha: float = 0.34,
        beta: float = 0.63,
        detach_state: bool = False,
        temperature: float = 0.1,
        chunk_size: int | None = 512,
        mask_missing: bool = True,
        eval_embedding: str = "late",
        eval_chunk_size: int = 8192,
        strict_modalities: bool = False,
    ):
        super().__init__()
        switches = {"inject_graph": inject_graph, "inject_visual": inject_visual, "use_outlooker": use_outlooker,
                    "use_conv": use_conv, "use_cprl": use_cprl, "multi_weight_gat": multi_weight_gat}
        self.ablation, changes = resolve_ablation(ablation)
        dropped_by_ablation = changes.pop("drop", None)
        requested = [m for m in modalities if m != dropped_by_ablation]
        self.full_switches = dict(switches)
        switches.update(changes)
        if eval_embedding not in ("late", "early"):
            raise ValueError(f"eval_embedding must be 'late' or 'early', got {eval_embedding!r}")
        used, self.dropped_modalities = resolve_modalities(
            requested, features.present, strict=strict_modalities, model=self.name, surface=surface)
        # graph first (Eq. 8-9 order), then the m1 modalities: text ones in the requested order, image last
        self.m1 = [m for m in used if m not in (STRUCTURE, VISUAL)] + ([VISUAL] if VISUAL in used else [])
        self.modalities = ([STRUCTURE] if STRUCTURE in used else []) + self.m1
        self.switches = switches
        self.eval_embedding = eval_embedding
        self.eval_chunk_size = eval_chunk_size
        self.dim = dim

        # ---- encoders (Sec. 3.3)
        self.feature_heads = nn.ModuleDict()
        present = []
        for m in self.modalities:
            if m == STRUCTURE:
                n = features.num_entities
                self.entity_embedding = nn.Embedding(n, dim)
                nn.init.normal_(self.entity_embedding.weight, std=1.0 / math.sqrt(n))
                self.gat = MultiWeightGATEncoder(dim, multi_weight=switches["multi_weight_gat"], **dict(gat or {}))
                self.register_buffer("graph", features.edge_index, persistent=False)
                present.append(torch.ones(n, dtype=torch.bool))
            elif m == NUMERIC:
                self.numeric = DNEFEncoder(features.modalities[m], features.numeric_mask, dim, numeric_ffn_dim)
                present.append(self.numeric.has_values.clone())
            elif m == VISUAL:  # Eq. 3: stand-in vectors for entities without an image, never masked
                self.visual = VisualEncoder(features.modalities[m], dim, features.masks.get(m))
                present.append(torch.ones(features.num_entities, dtype=torch.bool))
            else:
                table = features.modalities[m]
                self.feature_heads[m] = FeatureHead(table, dim)
                present.append(features.masks[m].bool() if m in features.masks else (table != 0).any(dim=1))
        present = torch.stack(present, dim=1)
        self.register_buffer("present", present if mask_missing else torch.ones_like(present), persistent=False)

        # ---- fusion (Sec. 3.4)
        has_graph = STRUCTURE in self.modalities
        self.graph_transformer = (GraphStructureTransformer(dim, fusion_heads, ffn_dim, fusion_dropout,
                                                            graph_attention_score)
                                  if has_graph else None)
        visual_ffn = {"use_outlooker": switches["use_outlooker"], "use_conv": switches["use_conv"],
                      **dict(outlooker or {})}
        self.mmpf = (PreSynergisticFusion(self.m1, dim, fusion_heads, ffn_dim, fusion_dropout,
                                          inject_graph=switches["inject_graph"] and has_graph,
                                          inject_visual=switches["inject_visual"], visual_ffn=visual_ffn)
                     if self.m1 else None)

        # ---- CPRL and losses (Sec. 3.5-3.6)
        self.cprl = (CPRL(len(self.modalities) * dim, theta, alpha, beta, detach_state)
                     if switches["use_cprl"] else None)
        self.icl = ICLLoss(temperature, chunk_size=chunk_size)
        self._last_weights: Tensor | None = None
        if self.ablation is None:
            self.ablation_effective = None
        elif dropped_by_ablation is not None:
            self.ablation_effective = dropped_by_ablation in modalities and features.present.get(dropped_by_ablation,
                                                                                                False)
        else:
            self.ablation_effective = self.components(self.full_switches) != self.components()

    # ------------------------------------------------------------------------------------------------ encoders
    def encode(self, index: Tensor | None = None) -> dict[str, Tensor]:
        """Modality -> ``(n, dim)`` embeddings ``x^m`` of the entities ``index`` (every entity when ``None``)."""
        out = {}
        for m in self.modalities:
            if m == STRUCTURE:
                out[m] = self.gat(self.entity_embedding.weight, self.graph, index)
            elif m == NUMERIC:
                out[m] = self.numeric(index)
            elif m == VISUAL:
                out[m] = self.visual(index)
            else:
                table = self.feature_heads[m]()  # sparse bags of words: the whole table costs little
                out[m] = table if index is None else table[index]
        return out

    # ------------------------------------------------------------------------------------------------ fusion
    def fuse(self, tokens: Mapping[str, Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """``tokens`` (modality -> ``(n, dim)``), ``present (n, M)`` -> late tokens ``x~^m`` ``(M, n, dim)``
        (modality-major) and the cross-modal weights ``(n, M)``, both in :attr:`modalities` order."""
        late, beta_g, beta_m1, graph_kv = [], None, None, None
        if self.graph_transformer is not None:
            graph_late, keys, values, beta_g = self.graph_transformer(tokens[STRUCTURE])
            late.append(graph_late.unsqueeze(0))
            graph_kv = (keys, values)
        if self.mmpf is not None:
            offset = len(self.modalities) - len(self.m1)
            m1_late, beta_m1 = self.mmpf(torch.stack([tokens[m] for m in self.m1]),
                                         graph_kv if self.mmpf.inject_graph else None, present[:, offset:])
            late.append(m1_late)
        return torch.cat(late), cross_modal_weights(beta_m1, beta_g, present)

    def joint(self, tokens: Mapping[str, Tensor], present: Tensor) -> Tensor:
        """``(n, M dim)`` joint embedding used for ranking (not normalised)."""
        late, weights = self.fuse(tokens, present)
        self._chunk_weights = weights.detach()
        if self.eval_embedding == "early":
            return weighted_concat(torch.stack([tokens[m] for m in self.modalities], dim=1), weights)
        return weighted_concat(late.transpose(0, 1), weights)

    def forward(self) -> Tensor:
        """``(N, M dim)`` L2-normalised joint embeddings of every entity (fused in chunks)."""
        tokens = self.encode()
        n = self.present.shape[0]
        joints, weights = [], []
        for start in range(0, n, self.eval_chunk_size):
            rows = slice(start, start + self.eval_chunk_size)
            joints.append(self.joint({m: t[rows] for m, t in tokens.items()}, self.present[rows]))
            weights.append(self._chunk_weights)
        self._last_weights = torch.cat(weights)
        return F.normalize(torch.cat(joints), dim=1)

    # ------------------------------------------------------------------------------------------------ losses
    def paired_losses(self, tokens: Tensor, present: Tensor,
                      weights: Tensor | None = None) -> tuple[list[Tensor], Tensor | None]:
        """The ICL of every modality, and with ``weights`` of the joint embedding, for paired rows.

        ``tokens (M, 2B, d)``: row ``i`` and row ``B + i`` are the two entities of link ``i`` (the layout of a
        training step); ``present (2B, M)``; ``weights (2B, M)`` the cross-modal weights. Returns the per-modality
        losses (``L_ICL`` or ``L_LICL`` terms) and ``L_joi`` of ``[w_m x^m / |x^m|]_m`` (or ``None``).

        Same chunks as :class:`ICLLoss` (consecutive ``chunk_size`` links, losses summed); a modality's loss keeps,
        within each chunk, the links whose two entities both have it (none if fewer than two): the left-out links'
        rows and columns are masked rather than gathered. All modalities share one batched product per similarity
        block, and the joint embedding's blocks follow from them (:meth:`ICLLoss.paired`).
        """
        batch = tokens.shape[1] // 2
        losses, joint = self.icl.paired(tokens, keep=(present[:batch] & present[batch:]).t(), weights=weights)
        return list(losses.unbind(0)), joint

    @staticmethod
    def reference(late: Tensor, present: Tensor) -> Tensor:
        """``R (n, M d)`` of CPRL: the modality-wise concatenation of the L2-normalised late embeddings (a zero block
        where the entity lacks the modality)."""
        return (F.normalize(late, dim=-1) * present.t().unsqueeze(-1)).transpose(0, 1).flatten(1)

    @staticmethod
    def joint_reference_cosine(weights: Tensor, present: Tensor) -> Tensor:
        """``cos(J, R) (n,)`` for ``J = [w_m x^_m]`` and ``R = [p_m x^_m]`` built from the same unit-norm tokens:
        ``J . R = sum_m w_m``, ``|J| = |w|``, ``|R| = sqrt(#present)``, so ``cos = sum(w) / (|w| sqrt(#present))`` --
        exactly what :meth:`reference` and the joint embedding give, without the ``(M d)``-wide vectors."""
        count = present.sum(dim=1).clamp(min=1).to(weights.dtype)
        return weights.sum(dim=1) / (weights.norm(dim=1).clamp(min=1e-12) * count.sqrt())

    def training_loss(self, links: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        entities = torch.cat([links[:, 0], links[:, 1]])  # embed and fuse only what the loss reads: row i <-> B + i
        tokens = self.encode(entities)
        present = self.present[entities]
        late, weights = self.fuse(tokens, present)
        parts: dict[str, Tensor] = {}

        icl, _ = self.paired_losses(torch.stack([tokens[m] for m in self.modalities]), present)  # L_ICL (Eq. 14)
        licl, parts["joint"] = self.paired_losses(late, present, weights)  # L_LICL, L_joi (Eq. 15)
        parts.update({"icl": torch.stack(icl).sum(), "licl": torch.stack(licl).sum()})
        total = parts["joint"] + parts["icl"] + parts["licl"]
        if self.cprl is not None:
            joint = weighted_concat(late.transpose(0, 1), weights)
            parts["rl"], rl_parts = self.cprl(joint, cos=self.joint_reference_cosine(weights, present))
            total = total + parts["rl"]
            parts.update({f"cprl_{k}": v for k, v in rl_parts.items()})
        parts.update({f"icl_{m}": loss.detach() for m, loss in zip(self.modalities, icl)})
        return total, parts

    # ------------------------------------------------------------------------------------------------ reporting
    def components(self, switches: Mapping[str, bool] | None = None) -> dict:
        """What actually runs on this data under ``switches`` (default: the built model's)."""
        s = self.switches if switches is None else switches
        has_image, has_graph = VISUAL in self.modalities, STRUCTURE in self.modalities
        text = [m for m in self.m1 if m != VISUAL]
        return {
            "modalities": list(self.modalities),
            "gat": ("multi-weight" if s["multi_weight_gat"] else "plain") if has_graph else None,
            "mmpf_graph_injection": bool(s["inject_graph"] and has_graph and self.m1),
            "mmpf_visual_injection": bool(s["inject_visual"] and has_image),
            "outlooker": bool(s["use_outlooker"] and has_image),
            "conv": bool(s["use_conv"] and has_image),
            "cprl": bool(s["use_cprl"]),
            "text_modalities": text,
        }

    def describe(self) -> dict:
        info = describe_modalities(self.modalities, self.dropped_modalities)
        info["components"] = self.components()
        info["ablation"] = ABLATIONS[self.ablation][0] if self.ablation else None
        if self.ablation:
            info["ablation_effective"] = bool(self.ablation_effective)
            if not self.ablation_effective:
                info["ablation_note"] = (f"{ABLATIONS[self.ablation][0]} changes nothing on this data (the part it "
                                         "removes is absent, e.g. no image features): this run is the full model")
        if self.mmpf is not None:
            info.update(self.mmpf.describe())
        if self._last_weights is not None:
            info["mean_modality_weights"] = dict(zip(self.modalities, self._last_weights.mean(0).tolist()))
        return info


"""``seeds=psqe``: PSQE pseudo-seed quality enhancement (Hong et al., KDD 2026), a plug-and-play seed generator.

Stage I  (:mod:`~mmea_lightning.seeds.cluster_sampling`): fused raw features, k-means, per-cluster quotas.
Stage II (:mod:`~mmea_lightning.seeds.global_sampling`): contrastive fine-tuning on the Stage-I seeds, global
         sampling of ``n`` new pairs, error correction.
Stage III (:mod:`~mmea_lightning.seeds.neighbour_expansion`): neighbourhood expansion above eta, recheck.

Every stage reads only the :class:`FeatureSet` (never the gold links), runs with or without images (and without
names), is cached on disk under a key of its input features, its settings and the previous stage's key, and returns
its links with a report. ``stages`` < 3 stops early (the paper's "w/o Stage III", "w/o Stage II+III" ablations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.seeds.base import SeedGeneration, UnsupervisedSeeds
from mmea_lightning.seeds.cache import features_fingerprint, stage_key
from mmea_lightning.seeds.cluster_sampling import ClusterSampling
from mmea_lightning.seeds.fusion import DEFAULT_PRIMARY, eligible_modalities, raw_fusion
from mmea_lightning.seeds.global_sampling import GlobalSampling
from mmea_lightning.seeds.neighbour_expansion import NeighbourExpansion, expansion_fusion

__all__ = ["PSQESeeds"]

PUBLISHED_WEIGHTS = {"primary": 0.8, "relation": 0.1, "attribute": 0.1}


class PSQESeeds(UnsupervisedSeeds):
    """The three PSQE stages.

    Args:
        n: the seed budget (1000 on DBP15K, 5000 on DWY15K in the paper): Stage I's total quota and Stage II's
            number of globally sampled pairs.
        primary: preference order of the primary ("visual") modality slot; see :mod:`~mmea_lightning.seeds.fusion`.
        weights: fusion weights of ``primary`` and the other modalities (0.8 / 0.1 / 0.1 as published).
        surface: the "with surface" setting (names may take the primary slot).
        seed: seed of k-means, of the Stage-II model and of the random order that breaks similarity ties.
        stages: run stages 1..``stages`` (1, 2 or 3).
        cluster_sampling / global_sampling / neighbour_expansion: the stages (Stages I and III: defaults when
            ``None``; Stage II has no default, since its model comes from the models layer: ``conf/seeds/psqe.yaml``
            wires it, and it is needed only with ``stages`` >= 2).
        test_links / cache: see :class:`UnsupervisedSeeds`.
    """

    name = "psqe"

    def __init__(self, n: int = 1000, primary: Sequence[str] = DEFAULT_PRIMARY,
                 weights: Mapping[str, float] | None = None, surface: bool = False, seed: int = 42, stages: int = 3,
                 cluster_sampling: ClusterSampling | None = None, global_sampling: GlobalSampling | None = None,
                 neighbour_expansion: NeighbourExpansion | None = None, test_links: str = "split",
                 cache: bool = True):
        super().__init__(test_links=test_links, cache=cache)
        if n < 1:
            raise ValueError(f"seeds.n={n}: the seed budget must be positive")
        if stages not in (1, 2, 3):
            raise ValueError(f"seeds.stages={stages}: choose 1, 2 or 3")
        self.n = int(n)
        self.primary = list(primary)
        self.weights = dict(PUBLISHED_WEIGHTS if weights is None else weights)
        if "primary" not in self.weights:
            self.weights["primary"] = 0.0
        self.surface = surface
        self.seed = seed
        self.stages = stages
        self.cluster_sampling = cluster_sampling or ClusterSampling()
        if global_sampling is None and stages >= 2:
            raise ValueError(f"seeds.stages={stages} needs seeds.global_sampling: a GlobalSampling with its Stage-II "
                             "model and loss (conf/seeds/psqe.yaml wires them), or stages=1")
        self.global_sampling = global_sampling
        self.neighbour_expansion = neighbour_expansion or NeighbourExpansion()

    def generate(self, features: FeatureSet, cache_dir: str | Path | None = None) -> SeedGeneration:
        raw, primary, left_out = raw_fusion(features, self.primary, self.weights, self.surface)
        allowed = eligible_modalities(features, self.surface)
        heads = [m for m, w in self.weights.items() if m != "primary" and w > 0 and m in allowed and m != primary]
        cache = self._stage_cache(cache_dir)
        # ``weights`` itself is in the info (and so in every stage's cache key): Stages II and III weight the heads
        # by it even when a modality is left out of the raw fusion, where ``raw_weights`` would not change
        info = {"primary": primary, "weights": dict(self.weights), "raw_weights": raw.weights(),
                "raw_left_out": left_out, "heads": heads, "surface": self.surface, "n": self.n, "seed": self.seed}

        key1 = stage_key("stage1", features_fingerprint(features), info, self.cluster_sampling.settings())

        def stage1() -> tuple[np.ndarray, dict, dict]:
            links, report = self.cluster_sampling.run(raw, features, self.n, self.seed)
            return links, {}, report

        first, _ = self.run_stage(cache, "stage1", key1, features, stage1)
        stages = [first]
        if self.stages == 1:
            return SeedGeneration(self.name, stages, info)

        key2 = stage_key("stage2", key1, self.global_sampling.settings())

        def stage2() -> tuple[np.ndarray, dict, dict]:
            return self.global_sampling.run(features, raw, primary, heads, self.weights, first.links, self.n,
                                            self.seed)

        second, extra = self.run_stage(cache, "stage2", key2, features, stage2)
        stages.append(second)
        if self.stages == 2:
            return SeedGeneration(self.name, stages, info)

        key3 = stage_key("stage3", key2, self.neighbour_expansion.settings())

        def stage3() -> tuple[np.ndarray, dict, dict]:
            embeddings = self.global_sampling.embed(features, primary, heads, extra["state_dict"], self.seed)
            fused = expansion_fusion(raw, primary, embeddings, self.weights)
            links, report = self.neighbour_expansion.run(features, raw, fused, second.links, self.seed)
            return links, {}, report

        third, _ = self.run_stage(cache, "stage3", key3, features, stage3)
        stages.append(third)
        return SeedGeneration(self.name, stages, info)

"""What an unsupervised seed generator is and what it returns.

An unsupervised generator sees only the :class:`FeatureSet` -- entity ids, graph, modality tables -- and never the
:class:`KGPair` that holds the gold links, so it cannot read them. It returns its seed links stage by stage, each
with a report (count, graph coverage, seconds, settings); the DataModule adds the precision against the gold links
for logging and serves the last stage's links where gold seeds go.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.splits import TEST_LINK_CHOICES
from mmea_lightning.seeds.cache import StageCache
from mmea_lightning.seeds.quality import graph_coverage

log = logging.getLogger(__name__)

__all__ = ["SeedGeneration", "SeedStage", "UnsupervisedSeeds", "check_links"]



@dataclass
class SeedStage:
    """One stage's seed links ``(S, 2)`` (``kg1_id, kg2_id``) and its report."""

    name: str
    links: np.ndarray
    report: dict = field(default_factory=dict)


@dataclass
class SeedGeneration:
    """The stages of one generator run; the last stage's links are the seeds."""

    generator: str
    stages: list[SeedStage]
    info: dict = field(default_factory=dict)

    @property
    def links(self) -> np.ndarray:
        return self.stages[-1].links


def check_links(links: np.ndarray, features: FeatureSet, stage: str) -> np.ndarray:
    """``links`` as ``(S, 2)`` int64, checked one-to-one with a KG1 id left and a KG2 id right."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    kg1 = np.zeros(features.num_entities, dtype=bool)
    kg1[features.kg1_ids.numpy()] = True
    kg2 = np.zeros(features.num_entities, dtype=bool)
    kg2[features.kg2_ids.numpy()] = True
    if len(links) and not (kg1[links[:, 0]].all() and kg2[links[:, 1]].all()):
        raise AssertionError(f"seed stage {stage}: a link is not (kg1 entity, kg2 entity)")
    if len(np.unique(links[:, 0])) != len(links) or len(np.unique(links[:, 1])) != len(links):
        raise AssertionError(f"seed stage {stage}: the links are not one-to-one")
    return links


class UnsupervisedSeeds(ABC):
    """Base of the generators that build pseudo seeds from the features alone (``seeds=pivot``, ``seeds=psqe``).

    Args:
        test_links: what the run is tested on -- ``split``: the test links of the gold-seed split at the same
            ``seed_ratio`` / ``split_seed`` (comparable with supervised runs; how the reference code evaluates its
            unsupervised mode), or ``all``: every gold link.
        cache: cache the stages under ``<cache_dir>/seeds``.
    """

    name = "unsupervised"
    unsupervised = True
    supervised = False

    def __init__(self, test_links: str = "split", cache: bool = True):
        if test_links not in TEST_LINK_CHOICES:
            raise ValueError(f"seeds.test_links={test_links!r}; choose among {list(TEST_LINK_CHOICES)}")
        self.test_links = test_links
        self.cache = cache

    @abstractmethod
    def generate(self, features: FeatureSet, cache_dir: str | Path | None = None) -> SeedGeneration:
        """The seed stages for ``features`` (the gold links are not an input)."""

    def _stage_cache(self, cache_dir: str | Path | None) -> StageCache:
        return StageCache(cache_dir if self.cache else None, self.name)

    def run_stage(self, cache: StageCache, stage: str, key: str, features: FeatureSet,
                  compute: Callable[[], tuple[np.ndarray, dict, dict]]) -> tuple[SeedStage, dict]:
        """Load stage ``stage`` from the cache or ``compute()`` it -> ``(links, extra payload, report info)``.

        Returns the :class:`SeedStage` (report: count, coverage, seconds of the computation, ``cached``, info) and the
        extra payload (e.g. a trained model's weights the next stage needs).
        """
        payload = cache.load(stage, key)
        cached = payload is not None
        if payload is None:
            start = time.perf_counter()
            links, extra, info = compute()
            seconds = time.perf_counter() - start
            links = check_links(links, features, stage)
            payload = {"links": links, "extra": extra, "info": info, "seconds": seconds}
            cache.save(stage, key, payload)
        links = check_links(payload["links"], features, stage)
        coverage = graph_coverage(links, features.edge_index, features.num_entities)
        report = {"count": len(links), **coverage, "seconds": float(payload["seconds"]), "cached": cached,
                  "key": key, **payload["info"]}
        log.info("seed stage %s: %d links, coverage %.4f, %.1f s%s", stage, len(links), coverage["coverage"],
                 report["seconds"], " (cached)" if cached else "")
        return SeedStage(stage, links, report), payload["extra"]

"""The seed-generator contract: where a run's training, validation and test links come from.

Every generator -- gold seeds (``seeds=gold``) and the pseudo-seed generators (``seeds=pivot``, ``seeds=psqe``) alike
-- is a :class:`SeedGenerator`: it has a ``name``, says whether its validation links are gold links
(``supervised``), and turns the pair's features and gold links into a :class:`SeedSplit` with one method,
:meth:`SeedGenerator.split`, which is all the DataModule calls.

A pseudo-seed generator (:class:`UnsupervisedSeeds`) builds its links from the :class:`FeatureSet` alone --
entity ids, graph, modality tables -- in :meth:`UnsupervisedSeeds.generate`, which never receives the gold links.
It returns its seed links stage by stage, each with a report (count, graph coverage, seconds, settings); the gold
links serve only as the test links and, in the DataModule, for the precision that is logged afterwards.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from mmea_lightning.data.features import FeatureSet
from mmea_lightning.data.splits import TEST_LINK_CHOICES, LinkSplit, unsupervised_split
from mmea_lightning.seeds.cache import StageCache
from mmea_lightning.seeds.quality import graph_coverage

log = logging.getLogger(__name__)

__all__ = ["SeedGeneration", "SeedGenerator", "SeedSplit", "SeedStage", "UnsupervisedSeeds", "check_generator",
           "check_links", "check_split"]


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


@dataclass(frozen=True)
class SeedSplit:
    """What a :class:`SeedGenerator` hands the DataModule.

    Attributes:
        split: ``train (S, 2)`` -- the seed links the aligner trains on; ``valid (V, 2)`` -- the links that select the
            checkpoint and stop early; ``test (T, 2)`` -- the links ``Trainer.test`` evaluates. Every link is a
            ``kg1_id, kg2_id`` row of global entity ids (``0 <= id < FeatureSet.num_entities``), int64.
        info: how the split was made, recorded under ``run.split`` in ``metrics.json`` (``mode`` and
            ``validation`` at least).
        generation: the stages that built pseudo seeds, or ``None`` (gold seeds): the DataModule writes them to
            ``<run dir>/seeds`` with their precision against the gold links (logging only, after the fact).
    """

    split: LinkSplit
    info: dict
    generation: SeedGeneration | None = None


class SeedGenerator(ABC):
    """Where a run's links come from (``conf/seeds/<name>.yaml`` builds one with ``_target_``).

    Class attributes every generator sets:
        name: recorded as ``seeds`` in ``metrics.json`` and as the ``seeds:<name>`` logger tag.
        supervised: ``True`` when the validation links are gold links, so that the checkpoint with the best
            validation MRR is worth testing (``test_checkpoint=auto`` picks ``best``); ``False`` for pseudo seeds,
            whose validation links are held-out pseudo seeds (``auto`` tests the final weights).
    """

    name: ClassVar[str]
    supervised: ClassVar[bool]

    @abstractmethod
    def split(self, features: FeatureSet, gold_links: np.ndarray, *, seed_ratio: float, val_ratio: float,
              split_seed: int, cache_dir: str | Path | None = None) -> SeedSplit:
        """The run's training, validation and test links.

        Args:
            features: the pair's features (``num_entities`` N, ``kg1_ids``, ``kg2_ids``, graph, modality tables).
            gold_links: ``(L, 2)`` int64 gold links ``kg1_id, kg2_id`` of the pair. A generator that does not
                learn from them may use them only for the test links (the gold split's test share).
            seed_ratio / val_ratio / split_seed: the run's split settings (see
                :func:`~mmea_lightning.data.splits.split_links`).
            cache_dir: where a generator may cache what it computes (``None``: no cache).
        """


def check_generator(generator: object) -> SeedGenerator:
    """``generator`` if it keeps the :class:`SeedGenerator` contract, else a ``TypeError`` saying what is missing."""
    kind = type(generator).__qualname__
    if not isinstance(generator, SeedGenerator):
        raise TypeError(f"the seed generator {kind} is not a SeedGenerator: subclass "
                        "mmea_lightning.seeds.base.SeedGenerator (name, supervised, split(...)); see docs/extending.md")
    name, supervised = getattr(generator, "name", None), getattr(generator, "supervised", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"the seed generator {kind} has no name: set the class attribute name = '<name>' (a str)")
    if not isinstance(supervised, bool):
        raise TypeError(f"the seed generator {kind} does not say whether its validation links are gold: set the "
                        "class attribute supervised = True or False")
    return generator


def check_split(result: object, features: FeatureSet, generator: str) -> SeedSplit:
    """``result`` of ``generator``'s :meth:`~SeedGenerator.split` with its links as int64 arrays, checked: a
    :class:`SeedSplit` whose train / valid / test parts are non-empty ``(K, 2)`` integer arrays of a KG1 id and a KG2
    id each. Anything else is an error naming the generator, the part and what is wrong."""
    if not isinstance(result, SeedSplit) or not isinstance(result.split, LinkSplit):
        raise TypeError(f"the seed generator {generator}: split() returned {type(result).__name__}; it must return a "
                        "SeedSplit(LinkSplit(train, valid, test), info)")
    n = features.num_entities
    kg1 = np.zeros(n, dtype=bool)
    kg1[features.kg1_ids.numpy()] = True
    kg2 = np.zeros(n, dtype=bool)
    kg2[features.kg2_ids.numpy()] = True
    parts = {}
    for part in ("train", "valid", "test"):
        links = np.asarray(getattr(result.split, part))
        where = f"the seed generator {generator}: split.{part}"
        if links.ndim != 2 or links.shape[1] != 2 or not np.issubdtype(links.dtype, np.integer):
            raise ValueError(f"{where} has shape {links.shape} and dtype {links.dtype}; it must be (K, 2) integer "
                             "rows kg1_id, kg2_id")
        if len(links) == 0:
            raise ValueError(f"{where} is empty: every part needs at least one link")
        if links.min() < 0 or links.max() >= n:
            raise ValueError(f"{where} holds ids in [{links.min()}, {links.max()}]; entity ids are in [0, {n})")
        wrong = ~(kg1[links[:, 0]] & kg2[links[:, 1]])
        if wrong.any():
            raise ValueError(f"{where}: {int(wrong.sum())} rows are not (KG1 entity, KG2 entity), e.g. "
                             f"{links[wrong][0].tolist()}")
        parts[part] = np.asarray(links, dtype=np.int64)
    if all(parts[p] is getattr(result.split, p) for p in parts):
        return result
    return SeedSplit(LinkSplit(**parts), result.info, result.generation)


class UnsupervisedSeeds(SeedGenerator):
    """Base of the generators that build pseudo seeds from the features alone (``seeds=pivot``, ``seeds=psqe``).

    A subclass sets ``name`` and implements :meth:`generate`; :meth:`split` serves the last stage's links: a
    ``val_ratio`` share of them validates, the rest trains, and the test links are chosen by ``test_links``.

    Args:
        test_links: what the run is tested on -- ``split``: the test links of the gold-seed split at the same
            ``seed_ratio`` / ``split_seed`` (comparable with supervised runs; how the reference code evaluates its
            unsupervised mode), or ``all``: every gold link.
        cache: cache the stages under ``<cache_dir>/seeds``.
    """

    supervised = False

    def __init__(self, test_links: str = "split", cache: bool = True):
        if test_links not in TEST_LINK_CHOICES:
            raise ValueError(f"seeds.test_links={test_links!r}; choose among {list(TEST_LINK_CHOICES)}")
        self.test_links = test_links
        self.cache = cache

    @abstractmethod
    def generate(self, features: FeatureSet, cache_dir: str | Path | None = None) -> SeedGeneration:
        """The seed stages for ``features`` (the gold links are not an input)."""

    def split(self, features: FeatureSet, gold_links: np.ndarray, *, seed_ratio: float, val_ratio: float,
              split_seed: int, cache_dir: str | Path | None = None) -> SeedSplit:
        """:meth:`generate` from the features alone, then the unsupervised split
        (:func:`~mmea_lightning.data.splits.unsupervised_split`): the gold links give only the test links."""
        generation = self.generate(features, cache_dir=cache_dir)  # no gold links in its input
        split = unsupervised_split(generation.links, gold_links, seed_ratio, val_ratio, split_seed,
                                   test_links=self.test_links)
        info = {
            "mode": "unsupervised",
            "seeds": self.name,
            "test_links": self.test_links,
            "validation": f"{val_ratio:g} of the pseudo seeds, held out from training (no gold link chooses "
                          "anything)",
            "pseudo_seeds": int(len(generation.links)),
            "pseudo_seed_info": generation.info,
        }
        return SeedSplit(split, info, generation)

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

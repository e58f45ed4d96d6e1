"""The LightningDataModule: one pair, its features, its split and its seed links."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from mmea_lightning.data.features import FeatureSet, FeatureSettings, load_or_build_features
from mmea_lightning.data.loader import DatasetSpec, load_pair, resolve_root
from mmea_lightning.data.pair import KGPair
from mmea_lightning.data.splits import LinkSplit, split_links
from mmea_lightning.seeds.gold import GoldSeeds

log = logging.getLogger(__name__)


class AlignmentDataModule(L.LightningDataModule):
    """Serves seed links for training, validation links for model selection and test links for ``test``.

    Batches are ``(B, 2)`` long tensors of ``kg1_id, kg2_id`` links. Validation and test serve their links as one
    batch: the evaluator ranks every query against the whole candidate set, in chunks.

    Args:
        dataset: a ``conf/dataset`` mapping (see :class:`DatasetSpec`).
        data_dir: the mmkg data root (unused by the generated toy pair).
        cache_dir: where built features (and the toy pair) are cached.
        output_dir: the run directory; the split is written to ``<output_dir>/split``.
        seed_ratio: share of gold links used for training (the rest is the test set).
        val_ratio: share of the training links carved out for validation.
        split_seed: seed of the split, independent of the model's seed.
        features: :class:`FeatureSettings` fields.
        seeds: callable ``(pair, split) -> (S, 2)`` seed links; gold seeds by default.
        batch_size: seed links per training step.
    """

    def __init__(
        self,
        dataset: Mapping,
        data_dir: str | None = None,
        cache_dir: str | None = ".cache",
        output_dir: str | None = None,
        seed_ratio: float = 0.3,
        val_ratio: float = 0.1,
        split_seed: int = 0,
        features: Mapping | None = None,
        seeds: Callable[[KGPair, LinkSplit], np.ndarray] | None = None,
        batch_size: int = 4096,
    ):
        super().__init__()
        self.spec = DatasetSpec.from_config(dict(dataset))
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.output_dir = output_dir
        self.seed_ratio = seed_ratio
        self.val_ratio = val_ratio
        self.split_seed = split_seed
        self.feature_settings = FeatureSettings(**dict(features or {}))
        self.seed_generator = seeds or GoldSeeds()
        self.batch_size = batch_size
        self.pair: KGPair | None = None
        self.features: FeatureSet | None = None
        self.split: LinkSplit | None = None
        self.seed_links: torch.Tensor | None = None
        self.timings: dict[str, float] = {}
        self.expansion_history: list[dict] = []  # filled by iterative training

    def setup(self, stage: str | None = None) -> None:
        if self.pair is not None:
            return
        start = time.perf_counter()
        root = resolve_root(self.spec, self.data_dir, self.cache_dir)
        self.pair = load_pair(self.spec, root)
        self.timings["load_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        self.features = load_or_build_features(self.pair, self.feature_settings, self.cache_dir)
        self.timings["feature_seconds"] = time.perf_counter() - start
        self.split = split_links(self.pair.gold_links, self.seed_ratio, self.val_ratio, self.split_seed)
        seeds = np.asarray(self.seed_generator(self.pair, self.split), dtype=np.int64).reshape(-1, 2)
        if len(seeds) == 0:
            raise ValueError(f"the seed generator {type(self.seed_generator).__name__} produced no seed links.")
        self.seed_links = torch.from_numpy(seeds)
        if self.output_dir:
            self.split.write(Path(self.output_dir) / "split")
            (Path(self.output_dir) / "split" / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        log.info("dataset %s: %s; split %s; %d seed links", self.spec.name, self.pair.counts(),
                 self.split.sizes(), len(seeds))

    def add_seed_links(self, links: np.ndarray) -> None:
        """Append ``(K, 2)`` links to the seed links (iterative training); served from the next epoch on."""
        self.seed_links = torch.cat([self.seed_links, torch.as_tensor(links, dtype=torch.long).reshape(-1, 2)])

    def summary(self) -> dict:
        """What the run was trained and evaluated on (for metrics.json)."""
        assert self.pair is not None and self.features is not None and self.split is not None
        return {
            "dataset": self.spec.name,
            "counts": self.pair.counts(),
            "split": {**self.split.sizes(), "seed_ratio": self.seed_ratio, "val_ratio": self.val_ratio,
                      "split_seed": self.split_seed},
            "seeds": getattr(self.seed_generator, "name", type(self.seed_generator).__name__),
            "num_seed_links": int(len(self.seed_links)),
            "iterative": list(self.expansion_history),
            "modalities_present": self.features.present,
            "feature_info": self.features.info,
            "timings": dict(self.timings),
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.seed_links), batch_size=self.batch_size, shuffle=True,
                          collate_fn=_links_only)

    def val_dataloader(self) -> DataLoader:
        links = self.split.valid if len(self.split.valid) else self.split.train
        return _one_batch(links)

    def test_dataloader(self) -> DataLoader:
        return _one_batch(self.split.test)


def _links_only(rows: list[tuple[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([row[0] for row in rows])


def _one_batch(links: np.ndarray) -> DataLoader:
    tensor = torch.from_numpy(np.ascontiguousarray(links))
    return DataLoader(TensorDataset(tensor), batch_size=max(len(tensor), 1), shuffle=False, collate_fn=_links_only)

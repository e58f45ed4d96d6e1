"""The LightningDataModule: one pair, its features, its split and its seed links."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from mmea_lightning.data.features import FeatureSet, FeatureSettings, load_or_build_features
from mmea_lightning.data.loader import DatasetSpec, load_pair, resolve_root
from mmea_lightning.data.pair import KGPair
from mmea_lightning.data.splits import LinkSplit
from mmea_lightning.seeds.base import SeedGenerator, SeedSplit, check_generator, check_split
from mmea_lightning.seeds.gold import GoldSeeds
from mmea_lightning.seeds.quality import quality_table
from mmea_lightning.seeds.report import seed_quality_rows, summary_rows, write_seed_outputs

log = logging.getLogger(__name__)


class AlignmentDataModule(L.LightningDataModule):
    """Serves seed links for training, validation links for model selection and test links for ``test``.

    The seed generator (:class:`~mmea_lightning.seeds.base.SeedGenerator`) makes the split. Gold seeds
    (``seeds=gold``, :attr:`supervised`): the seed links are the training share of the gold split. Pseudo seeds
    (``seeds=pivot``, ``seeds=psqe``): the generator builds them from the :class:`FeatureSet` alone (no gold links),
    they are split into training and validation links, and the test links are the gold split's (or all gold links);
    see :func:`~mmea_lightning.data.splits.unsupervised_split`. Each stage's links and report go to
    ``<output_dir>/seeds``; the gold links are read afterwards, only to log each stage's precision.

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
        seeds: a :class:`~mmea_lightning.seeds.base.SeedGenerator` (default :class:`GoldSeeds`); anything else is
            refused with a ``TypeError``.
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
        seeds: SeedGenerator | None = None,
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
        self.seed_generator = check_generator(GoldSeeds() if seeds is None else seeds)
        self.batch_size = batch_size
        self.pair: KGPair | None = None
        self.features: FeatureSet | None = None
        self.split: LinkSplit | None = None
        self.seed_links: torch.Tensor | None = None
        self.timings: dict[str, float] = {}
        self.expansion_history: list[dict] = []  # filled by iterative training
        self.initial_seed_links: int | None = None  # how many seed links there were before iterative training added
        self.seed_quality: list[dict] = []  # per-stage report of a pseudo-seed generator
        self.split_info: dict = {}  # how the generator made the split

    @property
    def supervised(self) -> bool:
        """``True`` when the validation links are gold links (gold seeds), so that selecting the checkpoint with the
        best validation MRR is meaningful; ``False`` for pseudo seeds (``pivot``, ``psqe``)."""
        return bool(self.seed_generator.supervised)

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
        seeds = self._split_links()
        if len(seeds) == 0:
            raise ValueError(f"the seed generator {type(self.seed_generator).__name__} produced no seed links.")
        self.seed_links = torch.from_numpy(seeds)
        if self.output_dir:
            self.split.write(Path(self.output_dir) / "split")
            (Path(self.output_dir) / "split" / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        log.info("dataset %s: %s; split %s; %d seed links", self.spec.name, self.pair.counts(),
                 self.split.sizes(), len(seeds))

    def _split_links(self) -> np.ndarray:
        """Let the seed generator make the split; record it (and report pseudo seeds); return the ``(S, 2)`` seeds."""
        generator = self.seed_generator
        start = time.perf_counter()
        result = check_split(generator.split(self.features, self.pair.gold_links, seed_ratio=self.seed_ratio,
                                             val_ratio=self.val_ratio, split_seed=self.split_seed,
                                             cache_dir=self.cache_dir), self.features, generator.name)
        self.timings["seed_seconds"] = time.perf_counter() - start
        self.split = result.split
        self.split_info = dict(result.info)
        if result.generation is not None:
            self._report_pseudo_seeds(result)
        return np.asarray(self.split.train, dtype=np.int64).reshape(-1, 2)

    def _report_pseudo_seeds(self, result: SeedSplit) -> None:
        """Each stage's precision against the gold links, and how many training / validation seeds are gold or test
        links: logging only, after the seeds were built."""
        generation = result.generation
        rows = seed_quality_rows(generation, self.pair.gold_links)
        self.seed_quality = summary_rows(rows)
        if self.output_dir:
            write_seed_outputs(Path(self.output_dir) / "seeds", generation, rows)
        log.info("%s seeds on %s:\n%s", self.seed_generator.name, self.spec.name, quality_table(self.seed_quality))
        gold = {tuple(link) for link in self.pair.gold_links.tolist()}
        test = {tuple(link) for link in self.split.test.tolist()}
        self.split_info.update({
            "train_seeds_in_gold": sum(tuple(link) in gold for link in self.split.train.tolist()),
            "train_seeds_in_test": sum(tuple(link) in test for link in self.split.train.tolist()),
            "valid_seeds_in_gold": sum(tuple(link) in gold for link in self.split.valid.tolist()),
        })

    def add_seed_links(self, links: np.ndarray) -> None:
        """Append ``(K, 2)`` links to the seed links (iterative training); served from the next epoch on."""
        if self.initial_seed_links is None:
            self.initial_seed_links = len(self.seed_links)
        self.seed_links = torch.cat([self.seed_links, torch.as_tensor(links, dtype=torch.long).reshape(-1, 2)])

    def state_dict(self) -> dict:
        """Saved in checkpoints (Lightning stores a DataModule's state): the seed links with the ones iterative
        training added, and its round history, so that a resumed run trains on what the interrupted one had
        gathered. A tensor and plain Python values: the checkpoint loads with ``torch.load(weights_only=True)``."""
        if self.seed_links is None:
            return {}
        return {"seed_links": self.seed_links.clone(),
                "initial_seed_links": int(self.initial_seed_links if self.initial_seed_links is not None
                                          else len(self.seed_links)),
                "expansion_history": [dict(record) for record in self.expansion_history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` when a fit resumes (after :meth:`setup`, which Lightning runs first). Testing
        or validating from a checkpoint (the best one, say) leaves the links and history of the fit alone."""
        if not state or (self.trainer is not None and self.trainer.state.fn != "fit"):
            return
        links = torch.as_tensor(state["seed_links"], dtype=torch.long).reshape(-1, 2)
        initial = int(state.get("initial_seed_links", len(links)))
        if self.seed_links is not None and not torch.equal(links[:initial], self.seed_links[:initial]):
            log.warning("the checkpoint's initial seed links differ from this run's (%d vs %d): training goes on "
                        "with the checkpoint's", initial, len(self.seed_links))
        self.seed_links = links.clone()
        self.initial_seed_links = initial
        self.expansion_history = [dict(record) for record in state.get("expansion_history", [])]

    def summary(self) -> dict:
        """What the run was trained and evaluated on (for metrics.json)."""
        assert self.pair is not None and self.features is not None and self.split is not None
        return {
            "dataset": self.spec.name,
            "counts": self.pair.counts(),
            "split": {**self.split.sizes(), "seed_ratio": self.seed_ratio, "val_ratio": self.val_ratio,
                      "split_seed": self.split_seed, **self.split_info},
            "seed_quality": list(self.seed_quality),
            "seeds": self.seed_generator.name,
            "num_seed_links": int(len(self.seed_links)),
            "iterative": list(self.expansion_history),
            "modalities_present": self.features.present,
            "feature_info": self.features.info,
            "timings": dict(self.timings),
        }

    def train_dataloader(self) -> DataLoader:
        """The seed links in batches, shuffled anew each epoch by a generator of their own seeded from the run's
        seed and the epoch (:class:`EpochShuffle`): the order never depends on what the process drew before, so a
        run resumed from a checkpoint sees the batches the uninterrupted run sees. The loader's own generator
        (each of its iterators draws a seed from it) keeps the global generator untouched as well."""
        seed = _run_seed()
        return DataLoader(TensorDataset(self.seed_links), batch_size=self.batch_size,
                          sampler=EpochShuffle(self.seed_links, seed), generator=torch.Generator().manual_seed(seed),
                          collate_fn=_links_only)

    def val_dataloader(self) -> DataLoader:
        # never the training links: a split without validation links is refused when it is made (check_ratios)
        return _one_batch(self.split.valid)

    def test_dataloader(self) -> DataLoader:
        return _one_batch(self.split.test)


def _run_seed() -> int:
    """The run's seed: the one ``seed_everything`` set (Lightning's ``DistributedSampler`` shuffles with it too)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else torch.initial_seed()


class EpochShuffle(RandomSampler):
    """A random order per epoch, drawn from a generator seeded with ``(seed, epoch)`` only; Lightning sets the
    epoch (``set_epoch``) at each epoch start, before the first batch is drawn (the order is drawn lazily, when the
    epoch's first batch is). A :class:`RandomSampler` still: under DDP Lightning swaps it for its
    ``DistributedSampler`` (shuffled with the same seed and the epoch) as it does for ``shuffle=True``."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        entropy = np.random.SeedSequence([self.seed % 2**63, self.epoch]).generate_state(2, dtype=np.uint32)
        self.generator.manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
        yield from super().__iter__()


def _links_only(rows: list[tuple[torch.Tensor]]) -> torch.Tensor:
    return torch.stack([row[0] for row in rows])


def _one_batch(links: np.ndarray) -> DataLoader:
    tensor = torch.from_numpy(np.ascontiguousarray(links))
    return DataLoader(TensorDataset(tensor), batch_size=max(len(tensor), 1), shuffle=False, collate_fn=_links_only)

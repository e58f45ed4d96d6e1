"""Gold-link splits: train / validation / test, from their own ``split_seed``.

The gold links are shuffled with ``split_seed`` and cut: the first ``seed_ratio`` share is the training share, the
rest is the test set. A ``val_ratio`` share of the training share is carved out for checkpoint selection and early
stopping (never the test links). The test links are read only by ``Trainer.test``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TEST_LINK_CHOICES = ("split", "all")  # the test links of unsupervised runs: the gold split's, or every gold link


@dataclass(frozen=True)
class LinkSplit:
    train: np.ndarray  # (L_train, 2) kg1_id, kg2_id
    valid: np.ndarray  # (L_valid, 2)
    test: np.ndarray  # (L_test, 2)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)}

    def write(self, directory: str | Path) -> None:
        """Write ``train_links.tsv``, ``valid_links.tsv``, ``test_links.tsv`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, links in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            np.savetxt(directory / f"{name}_links.tsv", links, fmt="%d", delimiter="\t")


def split_links(links: np.ndarray, seed_ratio: float, val_ratio: float, split_seed: int) -> LinkSplit:
    """Shuffle ``links`` ``(L, 2)`` with ``split_seed`` and cut them (see the module doc)."""
    if not 0.0 < seed_ratio < 1.0:
        raise ValueError(f"seed_ratio={seed_ratio} must be in (0, 1): it is the share of gold links used to train.")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio={val_ratio} must be in [0, 1): the share of training links kept for validation.")
    order = np.random.default_rng(split_seed).permutation(len(links))
    shuffled = links[order]
    n_train = int(len(links) * seed_ratio)
    n_valid = int(round(n_train * val_ratio))
    split = LinkSplit(train=shuffled[n_valid:n_train], valid=shuffled[:n_valid], test=shuffled[n_train:])
    for name, size in split.sizes().items():
        if size == 0 and not (name == "valid" and val_ratio == 0.0):
            raise ValueError(
                f"the {name} split is empty ({len(links)} gold links, seed_ratio={seed_ratio}, val_ratio={val_ratio}); "
                "raise seed_ratio/val_ratio or use a dataset with more gold links."
            )
    return split


def unsupervised_split(seed_links: np.ndarray, gold_links: np.ndarray, seed_ratio: float, val_ratio: float,
                       split_seed: int, test_links: str = "split") -> LinkSplit:
    """The split of an unsupervised run (pseudo seeds from ``seeds=pivot`` / ``seeds=psqe``).

    * train: the pseudo seeds ``seed_links (S, 2)`` minus the validation share;
    * valid: a ``val_ratio`` share of the pseudo seeds (shuffled with ``split_seed``), held out from training:
      checkpoint selection and early stopping never read a gold link in the unsupervised setting;
    * test: ``test_links="split"``: the test links of the gold-seed split at ``seed_ratio`` / ``split_seed``
      (exactly those of :func:`split_links`, so supervised and unsupervised runs are tested on the same links), or
      ``"all"``: every gold link.

    Pseudo seeds may coincide with test links (they were chosen without the gold links, as in the reference code's
    unsupervised mode); the DataModule records how many do.
    """
    if test_links not in TEST_LINK_CHOICES:
        raise ValueError(f"test_links={test_links!r}; choose among {list(TEST_LINK_CHOICES)}")
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio={val_ratio} must be in [0, 1): the share of pseudo seeds kept for validation.")
    seed_links = np.asarray(seed_links, dtype=np.int64).reshape(-1, 2)
    order = np.random.default_rng(split_seed).permutation(len(seed_links))
    n_valid = int(round(len(seed_links) * val_ratio))
    valid, train = seed_links[np.sort(order[:n_valid])], seed_links[np.sort(order[n_valid:])]
    if len(train) == 0:
        raise ValueError(f"no pseudo seed is left for training ({len(seed_links)} seeds, val_ratio={val_ratio}).")
    test = split_links(gold_links, seed_ratio, val_ratio, split_seed).test if test_links == "split" else gold_links
    return LinkSplit(train=train, valid=valid, test=np.asarray(test, dtype=np.int64).reshape(-1, 2))

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
MAX_VAL_RATIO = 0.5  # above it, validation would hold more links than training


def check_ratios(seed_ratio: object, val_ratio: object) -> tuple[float, float]:
    """``(seed_ratio, val_ratio)`` as floats, or a ``ValueError`` that says which setting is wrong and the fix.

    ``seed_ratio`` must be a number in ``(0, 1)``; ``val_ratio`` a number in ``(0, 0.5]``: ``0`` would leave nothing
    to validate on (validating on the training links would select checkpoints on what the model was fitted to), and
    more than half would train on fewer links than it validates on (``val_ratio=0.99`` trains on one link).
    """
    values = []
    for name, value in (("seed_ratio", seed_ratio), ("val_ratio", val_ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name}={value!r} is not a number: pass a share, e.g. {name}="
                             f"{'0.3' if name == 'seed_ratio' else '0.1'}.")
        values.append(float(value))
    seed_ratio, val_ratio = values
    if not 0.0 < seed_ratio < 1.0:
        raise ValueError(f"seed_ratio={seed_ratio} must be in (0, 1): it is the share of gold links used to train.")
    if val_ratio <= 0.0:
        raise ValueError(f"val_ratio={val_ratio} leaves no validation links; validating on the training links would "
                         "select checkpoints on what the model was fitted to. Use a positive share (the papers' "
                         "protocols here: 0.05-0.1).")
    if val_ratio > MAX_VAL_RATIO:
        raise ValueError(f"val_ratio={val_ratio} keeps more links for validation than for training; use a share "
                         f"<= {MAX_VAL_RATIO} (the papers' protocols here: 0.05-0.1).")
    return seed_ratio, val_ratio


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


def _keep_groups_together(links: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Links that share an entity (a gold alignment that is not 1-to-1) all take the side of the group's first link
    in the shuffled order, so no entity is on two sides of a split. 1-to-1 links are left exactly where they are."""
    if len(np.unique(links[:, 0])) == len(links) and len(np.unique(links[:, 1])) == len(links):
        return side
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # a graph over links: two links are adjacent when they share their KG1 or their KG2 entity
    nodes = np.arange(len(links))
    rows, cols = [], []
    for column in (0, 1):
        _, first, inverse = np.unique(links[:, column], return_index=True, return_inverse=True)
        rows.append(nodes)
        cols.append(first[inverse])
    graph = coo_matrix((np.ones(2 * len(links)), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(len(links), len(links)))
    _, component = connected_components(graph, directed=False)
    first_of_component = np.full(component.max() + 1, len(links))
    np.minimum.at(first_of_component, component, nodes)
    return side[first_of_component[component]]


def split_links(links: np.ndarray, seed_ratio: float, val_ratio: float, split_seed: int) -> LinkSplit:
    """Shuffle ``links`` ``(L, 2)`` with ``split_seed`` and cut them (see the module doc).

    Links that share an entity (gold alignments that are not 1-to-1, e.g. FB15K-DB15K's 4 DB15K entities linked
    twice) stay together on the side of the first of them in the shuffled order; the sides' sizes can then differ
    from the ratios by the size of such groups.
    """
    seed_ratio, val_ratio = check_ratios(seed_ratio, val_ratio)
    order = np.random.default_rng(split_seed).permutation(len(links))
    shuffled = links[order]
    n_train = int(len(links) * seed_ratio)
    n_valid = int(round(n_train * val_ratio))
    side = np.repeat([0, 1, 2], [n_valid, n_train - n_valid, len(links) - n_train])  # valid | train | test
    side = _keep_groups_together(shuffled, side)
    split = LinkSplit(train=shuffled[side == 1], valid=shuffled[side == 0], test=shuffled[side == 2])
    for name, size in split.sizes().items():
        if size == 0:
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
    seed_ratio, val_ratio = check_ratios(seed_ratio, val_ratio)
    seed_links = np.asarray(seed_links, dtype=np.int64).reshape(-1, 2)
    order = np.random.default_rng(split_seed).permutation(len(seed_links))
    n_valid = int(round(len(seed_links) * val_ratio))
    valid, train = seed_links[np.sort(order[:n_valid])], seed_links[np.sort(order[n_valid:])]
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(f"{len(seed_links)} pseudo seeds give {len(train)} training and {len(valid)} validation links "
                         f"at val_ratio={val_ratio}: both need at least one; raise the generator's seed budget.")
    test = split_links(gold_links, seed_ratio, val_ratio, split_seed).test if test_links == "split" else gold_links
    return LinkSplit(train=train, valid=valid, test=np.asarray(test, dtype=np.int64).reshape(-1, 2))

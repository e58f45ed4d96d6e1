"""Every dataset config loads from the mmkg data root (``--data-dir``) with the release's published counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmea_lightning.data.loader import load_pair

from .test_readers import spec

# The release's counts, copied here on purpose (the configs' expected_counts are not used).
README_TABLE = {
    "fbdb15k": (14951, 12842, 505436, 99028, 12846),
    "fbyg15k": (14951, 15404, 505436, 122886, 11199),
    "dbp15k_zh_en": (19388, 19572, 70414, 95142, 15000),
    "dbp15k_ja_en": (19814, 19780, 77214, 93484, 15000),
    "dbp15k_fr_en": (19661, 19993, 105998, 115722, 15000),
    "dwy15k": (15000, 15000, 38421, 40159, 15000),
    "openea_d_w_v1": (15000, 15000, 38265, 42746, 15000),
    "openea_d_w_v2": (15000, 15000, 73983, 83365, 15000),
    "openea_en_fr_v1": (15000, 15000, 47334, 40864, 15000),
    "openea_en_de_v1": (15000, 15000, 47676, 50419, 15000),
}


def test_every_dataset_has_a_config():
    conf = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    # every benchmark of the data README, the generated toy pair, and `tsv` (a user's own folder of TSV files)
    assert {p.stem for p in conf.glob("*.yaml")} == set(README_TABLE) | {"toy", "tsv"}


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_counts_match_readme(name, data_dir):
    pair = load_pair(spec(name), data_dir)
    c = pair.counts()
    found = (c["kg1_entities"], c["kg2_entities"], c["kg1_triples"], c["kg2_triples"], c["gold_links"])
    assert found == README_TABLE[name]
    assert not pair.available_modalities()["image"]  # no pkls/ in the shared data: never faked
    if name.startswith("dbp15k"):
        assert sum(bool(n) for n in pair.names) > 0.95 * pair.num_entities
        # training_attrs_1/2 (added 2026-12-03): keys of the 15,000 aligned entities per side only
        with_attrs = np.unique(pair.attribute_pairs[:, 0]) if len(pair.attribute_pairs) else np.array([])
        assert 0 < len(with_attrs) <= 30000
    if name.startswith("fb"):
        assert len(pair.numeric_values) > 20000 and len(pair.attribute_pairs) > 0

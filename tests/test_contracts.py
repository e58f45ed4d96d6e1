"""Issue 28 part 1: the extension contracts are types. Every shipped aligner (``conf/model/*.yaml``) is an
:class:`Aligner` returning the documented shapes on the toy pair; every shipped seed generator (``conf/seeds/*.yaml``)
is a :class:`SeedGenerator` whose split has the documented form; anything else is refused with an error naming the
class and what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from torch import nn

from mmea_lightning.data.splits import LinkSplit
from mmea_lightning.lightning.aligner_module import AlignerModule
from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.models.aligners.base import REQUIRED_DESCRIPTION_KEYS, Aligner, check_aligner
from mmea_lightning.seeds.base import SeedGenerator, SeedSplit, UnsupervisedSeeds, check_generator

from .conftest import CONF_DIR, make_config

MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
SEEDS = sorted(p.stem for p in (Path(CONF_DIR) / "seeds").glob("*.yaml"))
#: keep the toy runs short: PSQE's first stage only (its later stages are covered by tests/test_seeds*.py)
SEED_OVERRIDES = {"pivot": ["seeds.n=120"], "psqe": ["seeds.n=120", "seeds.stages=1"]}
TOY = yaml.safe_load((Path(CONF_DIR) / "dataset" / "toy.yaml").read_text())


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> AlignmentDataModule:
    dm = AlignmentDataModule(TOY, cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.setup()
    return dm


def test_the_shipped_configs_are_found():
    assert {"eva", "mclea", "meaformer", "mpsea"} <= set(MODELS) and {"gold", "pivot", "psqe"} <= set(SEEDS)


@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_aligner_keeps_the_contract(name, toy, tmp_path):
    cfg = make_config(tmp_path, tmp_path / "cache", [f"model={name}"])
    torch.manual_seed(0)
    aligner = instantiate(cfg.model.module.aligner)(features=toy.features)
    assert isinstance(aligner, Aligner) and check_aligner(aligner) is aligner

    n = toy.features.num_entities
    aligner.eval()
    with torch.no_grad():
        embeddings = aligner()
    assert embeddings.dim() == 2 and embeddings.shape[0] == n and embeddings.is_floating_point()
    assert torch.isfinite(embeddings).all()

    aligner.train()
    links = toy.seed_links[:64]  # (B, 2) kg1_id, kg2_id
    loss, parts = aligner.training_loss(links)
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    assert parts and all(isinstance(k, str) and v.shape == () for k, v in parts.items())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in aligner.parameters())

    described = aligner.describe()
    assert set(REQUIRED_DESCRIPTION_KEYS) <= set(described)
    assert described["modalities_used"] and all(isinstance(m, str) for m in described["modalities_used"])
    assert all(isinstance(m, str) for m in described["modalities_dropped"])
    json.dumps(described)  # recorded in metrics.json


@pytest.mark.parametrize("name", SEEDS)
def test_every_shipped_seed_generator_keeps_the_contract(name, toy, tmp_path):
    cfg = make_config(tmp_path, tmp_path / "cache", [f"seeds={name}", *SEED_OVERRIDES.get(name, [])])
    generator = instantiate(cfg.seeds)
    assert isinstance(generator, SeedGenerator) and check_generator(generator) is generator
    assert generator.name == name and isinstance(generator.supervised, bool)
    # pseudo seeds are made from the features alone: their validation links are not gold
    assert generator.supervised == (not isinstance(generator, UnsupervisedSeeds))

    result = generator.split(toy.features, toy.pair.gold_links, seed_ratio=0.3, val_ratio=0.1, split_seed=0,
                             cache_dir=None)
    assert isinstance(result, SeedSplit) and isinstance(result.split, LinkSplit)
    n = toy.features.num_entities
    kg1, kg2 = set(toy.features.kg1_ids.tolist()), set(toy.features.kg2_ids.tolist())
    for part in (result.split.train, result.split.valid, result.split.test):
        assert part.dtype == np.int64 and part.ndim == 2 and part.shape[1] == 2 and len(part) > 0
        assert 0 <= part.min() and part.max() < n
        assert set(part[:, 0].tolist()) <= kg1 and set(part[:, 1].tolist()) <= kg2
    train = {tuple(link) for link in result.split.train.tolist()}
    assert not train & {tuple(link) for link in result.split.valid.tolist()}  # validation is held out
    assert {"mode", "validation"} <= set(result.info)
    assert (result.generation is None) == generator.supervised  # pseudo seeds come with their stages
    dm = AlignmentDataModule(TOY, seeds=generator)
    assert dm.supervised == generator.supervised


def test_a_non_aligner_is_refused_with_its_class_and_the_missing_method(toy):
    optimizer = torch.optim.SGD
    with pytest.raises(TypeError, match=r"Linear is not an Aligner \(it lacks training_loss\(\), describe\(\)\)"):
        AlignerModule(lambda features: nn.Linear(2, 2), toy.features, optimizer)

    class DuckTyped(nn.Module):  # the methods, but not the contract's type
        def forward(self):
            return torch.zeros(1, 1)

        def training_loss(self, links):
            return torch.zeros(()), {}

        def describe(self):
            return {"modalities_used": [], "modalities_dropped": []}

    with pytest.raises(TypeError, match="DuckTyped is not an Aligner .*does not subclass Aligner"):
        AlignerModule(lambda features: DuckTyped(), toy.features, optimizer)

    class Incomplete(Aligner):
        def forward(self):
            return torch.zeros(1, 1)

    with pytest.raises(TypeError, match="abstract .*describe.*training_loss|abstract .*training_loss.*describe"):
        Incomplete()


def test_a_non_generator_is_refused_with_what_it_lacks():
    with pytest.raises(TypeError, match="object is not a SeedGenerator"):
        AlignmentDataModule(TOY, seeds=object())

    class Unnamed(SeedGenerator):
        supervised = True

        def split(self, features, gold_links, **kwargs):
            raise AssertionError("never called")

    class Undecided(SeedGenerator):
        name = "undecided"

        def split(self, features, gold_links, **kwargs):
            raise AssertionError("never called")

    with pytest.raises(TypeError, match="Unnamed has no name"):
        AlignmentDataModule(TOY, seeds=Unnamed())
    with pytest.raises(TypeError, match="Undecided does not say whether its validation links are gold"):
        AlignmentDataModule(TOY, seeds=Undecided())


def test_a_generator_that_returns_a_bad_split_is_named_with_the_part(toy):
    class Swapped(SeedGenerator):  # KG2 ids where KG1 ids belong
        name, supervised = "swapped", True

        def split(self, features, gold_links, **kwargs):
            links = gold_links[:, ::-1]
            return SeedSplit(LinkSplit(train=links[:10], valid=links[10:20], test=links[20:]), {"mode": "test"})

    class Tupled(SeedGenerator):
        name, supervised = "tupled", True

        def split(self, features, gold_links, **kwargs):
            return gold_links[:10], gold_links[10:20], gold_links[20:]

    with pytest.raises(ValueError, match=r"swapped: split.train: 10 rows are not \(KG1 entity, KG2 entity\)"):
        AlignmentDataModule(TOY, cache_dir=toy.cache_dir, seeds=Swapped()).setup()
    with pytest.raises(TypeError, match="tupled: split\\(\\) returned tuple; it must return a SeedSplit"):
        AlignmentDataModule(TOY, cache_dir=toy.cache_dir, seeds=Tupled()).setup()

"""PSQE's Stage-II model comes from the configuration (seeds do not import models): wiring, seeding, cache key."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mmea_lightning.data.features import FeatureSettings, build_features
from mmea_lightning.data.loader import load_pair
from mmea_lightning.data.toy import generate_toy_pair
from mmea_lightning.models.encoders.seed_tuning import SeedTuningModel
from mmea_lightning.models.losses.icl import ICLLoss
from mmea_lightning.seeds.global_sampling import GlobalSampling
from mmea_lightning.seeds.psqe import PSQESeeds
from mmea_lightning.seeds.tuning import build_tuning_model, describe_factory, fit_tuning_model

from .conftest import CONF_DIR
from .test_readers import spec


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = generate_toy_pair(tmp_path_factory.mktemp("toy") / "toy")
    return build_features(load_pair(spec("toy"), root), FeatureSettings())


def test_the_config_wires_the_models_layer_into_stage_two():
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base=None):
        cfg = compose(config_name="train", overrides=["seeds=psqe", "seeds.global_sampling.model.dim=16",
                                                      "seeds.global_sampling.loss.temperature=0.2"])
    stage = instantiate(cfg.seeds).global_sampling
    settings = stage.settings()
    assert settings["model"] == {"target": "mmea_lightning.models.encoders.seed_tuning.SeedTuningModel", "dim": 16,
                                 "gat_layers": 2, "gat_heads": 2}
    assert settings["loss"] == {"target": "mmea_lightning.models.losses.icl.ICLLoss", "temperature": 0.2,
                                "chunk_size": 2000}
    loss = stage.loss()
    assert isinstance(loss, ICLLoss) and loss.temperature == 0.2 and loss.chunk_size == 2000


def test_stage_two_model_is_seeded_and_leaves_the_global_rng_alone(features):
    factory = partial(SeedTuningModel, dim=8, gat_layers=1, gat_heads=1)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = build_tuning_model(factory, features, "image", ["relation", "attribute"], seed=0)
    assert torch.equal(torch.rand(1), before)  # the global RNG did not move
    again = build_tuning_model(factory, features, "image", ["relation", "attribute"], seed=0)
    other = build_tuning_model(factory, features, "image", ["relation", "attribute"], seed=1)
    state, state2, state3 = first.state_dict(), again.state_dict(), other.state_dict()
    assert all(torch.equal(state[k], state2[k]) for k in state)
    assert not all(torch.equal(state[k], state3[k]) for k in state)
    out = first()
    assert set(out) == {"graph", "relation", "attribute"}
    assert all(v.shape == (features.num_entities, 8) for v in out.values())
    links = torch.stack([features.kg1_ids[:20], features.kg2_ids[:20]], dim=1)
    losses = fit_tuning_model(first, ICLLoss(0.1), links, epochs=3, lr=0.01, seed=0)
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_the_factories_enter_the_cache_key():
    base = GlobalSampling(partial(SeedTuningModel, dim=300), partial(ICLLoss, temperature=0.1))
    wider = GlobalSampling(partial(SeedTuningModel, dim=64), partial(ICLLoss, temperature=0.1))
    warmer = GlobalSampling(partial(SeedTuningModel, dim=300), partial(ICLLoss, temperature=0.5))
    assert len({repr(s.settings()) for s in (base, wider, warmer)}) == 3
    assert describe_factory(SeedTuningModel) == {"target": "mmea_lightning.models.encoders.seed_tuning.SeedTuningModel"}


def test_missing_or_wrong_stage_two_parts_are_clear_errors():
    with pytest.raises(ValueError, match="seeds.global_sampling"):
        PSQESeeds(n=10, stages=2)
    assert PSQESeeds(n=10, stages=1).global_sampling is None
    with pytest.raises(ValueError, match="_partial_: true"):
        GlobalSampling(model={"dim": 300}, loss=partial(ICLLoss))
    with pytest.raises(ValueError, match="primary modality or at least one head"):
        build_tuning_model(partial(SeedTuningModel), None, None, [], seed=0)


def test_an_entity_without_a_value_has_no_evidence_in_that_tuned_view(features):
    """A head maps a zero input row to its bias: every attribute-less entity would embed the same vector and score a
    cosine of 1 with every other one in Stage II's and III's fused similarity (DBP15K: attributes only for the aligned
    entities). The tuned embeddings give them a zero row instead: no evidence in that view."""
    from dataclasses import replace

    from mmea_lightning.seeds.global_sampling import tuned_fusion
    from mmea_lightning.seeds.tuning import tuned_embeddings

    attributes = features.modalities["attribute"].clone()
    lacking = torch.tensor([0, 1, int(features.kg2_ids[0]), int(features.kg2_ids[1])])
    attributes[lacking] = 0
    masks = {k: v.clone() for k, v in features.masks.items()}
    if "attribute" in masks:
        masks["attribute"][lacking] = False
    partial_data = replace(features, modalities={**features.modalities, "attribute": attributes}, masks=masks)
    factory = partial(SeedTuningModel, dim=8, gat_layers=1, gat_heads=1)
    model = build_tuning_model(factory, partial_data, "image", ["relation", "attribute"], seed=0)
    fit_tuning_model(model, ICLLoss(temperature=0.1), torch.tensor([[2, int(features.kg2_ids[2])]]), 2, 0.01, 0)

    with torch.no_grad():  # the problem: the head's output is one vector for all of them
        raw = model()["attribute"][lacking]
    assert torch.allclose(raw, raw[:1].expand_as(raw))
    tuned = tuned_embeddings(model, partial_data, ["relation", "attribute"])
    assert torch.equal(tuned["attribute"][lacking], torch.zeros(len(lacking), 8))
    has_value = (attributes != 0).any(dim=1)
    assert bool((tuned["attribute"][has_value].norm(dim=1) > 0).all())
    with_relations = (partial_data.modalities["relation"] != 0).any(dim=1)
    with torch.no_grad():  # rows with a value keep the model's output, in every view
        assert torch.equal(tuned["relation"][with_relations], model()["relation"][with_relations])
        assert torch.equal(tuned["graph"], model()["graph"])
    fused = tuned_fusion({"attribute": tuned["attribute"]}, {"attribute": 1.0})
    left, right = lacking[:2].numpy(), lacking[2:].numpy()
    assert torch.equal(fused.similarity(left, right), torch.zeros(2, 2))  # not 1: no evidence either way

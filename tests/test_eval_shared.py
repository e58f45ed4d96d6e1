"""The shared evaluation (``mmea_lightning/eval/shared_ranking.py``) ranks exactly as every protocol ranked on its own
with ``rank_targets`` (``evaluate_alignment(shared=False)``), on embeddings full of exact ties, duplicate and
scaled vectors, in every code path: both directions from one block (one-to-one links, with and without identical
kg1 vectors inside and outside the links), each direction on its own (entities in several links; no room to keep
the block), several blocks and grouped top-k; and the module computes the embeddings once per evaluation."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import mmea_lightning.eval.shared_ranking as shared
from mmea_lightning.eval import PROTOCOLS, evaluate_alignment, rank_targets
from mmea_lightning.eval.shared_ranking import protocol_ranks
from mmea_lightning.lightning.aligner_module import AlignerModule
from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.models.aligners.eva import EVA

from .test_readers import spec

LAYOUTS = ("one_to_one", "kg1_duplicates", "shared_entities")


def _tied_vectors(gen: torch.Generator, n: int, dim: int) -> torch.Tensor:
    """Distinct non-zero vectors in {-1, 0, 1}^dim: few distinct cosines, so many exact ties."""
    out: list[torch.Tensor] = []
    seen: set[tuple[float, ...]] = set()
    while len(out) < n:
        v = torch.randint(-1, 2, (dim,), generator=gen).float()
        if bool(v.any()) and tuple(v.tolist()) not in seen:
            seen.add(tuple(v.tolist()))
            out.append(v)
    return torch.stack(out)


def _tied_pair(seed: int, layout: str, n1: int = 70, n2: int = 90, num_links: int = 50, dim: int = 10):
    """``(embeddings, links, kg1_ids, kg2_ids)``; kg1 and kg2 ids interleaved in the embedding table (a random
    permutation). kg2 holds exact duplicates (``2 v``, ``4 v``: identical after normalisation) and near duplicates
    (``3 v``: ties within the tolerance). ``kg1_duplicates``: linked kg1 entities with identical vectors, and kg1
    entities outside the links identical to linked ones; ``shared_entities``: entities in several links."""
    gen = torch.Generator().manual_seed(seed)
    x1, x2 = _tied_vectors(gen, n1, dim), _tied_vectors(gen, n2, dim)
    x2[:8] = x2[8:16] * torch.tensor([2.0, 4.0, 3.0, 2.0, 4.0, 3.0, 2.0, 1.0])[:, None]
    perm = torch.randperm(n1 + n2, generator=gen)  # global id -> row
    embeddings = torch.empty(n1 + n2, dim)
    embeddings[perm] = torch.cat([x1, x2])
    kg1_ids, kg2_ids = perm[:n1], perm[n1:]
    if layout == "shared_entities":  # kg1 and kg2 entities in several links each
        left = kg1_ids[torch.randint(n1 // 2, (num_links,), generator=gen)]
        right = kg2_ids[torch.randint(n2 // 2, (num_links,), generator=gen)]
        links = torch.unique(torch.stack([left, right], 1), dim=0)
        links = links[torch.randperm(len(links), generator=gen)]
    else:
        left = kg1_ids[torch.randperm(n1, generator=gen)[:num_links]]
        right = kg2_ids[torch.randperm(n2, generator=gen)[:num_links]]
        links = torch.stack([left, right], 1)
    if layout == "kg1_duplicates":
        outside = kg1_ids[~torch.isin(kg1_ids, left)]
        embeddings[left[[7, 20, 33]]] = embeddings[left[[2, 20, 2]]] * torch.tensor([[2.0], [1.0], [4.0]])
        embeddings[outside[:3]] = embeddings[left[[2, 5, 5]]] * torch.tensor([[1.0], [2.0], [2.0]])
        embeddings[outside[3]] = embeddings[outside[4]]
    return embeddings, links, kg1_ids, kg2_ids


def _reference_ranks(embeddings, links, kg1_ids, kg2_ids, name: str, csls_k: int):
    """One protocol ranked on its own, as evaluate_alignment(shared=False) ranks it."""
    r2l = name in ("r2l", "all_r2l", "csls_r2l")
    queries = links[:, 1] if r2l else links[:, 0]
    if name.startswith("all"):
        graph = kg1_ids if r2l else kg2_ids
        targets = (graph[None, :] == (links[:, 0] if r2l else links[:, 1])[:, None]).float().argmax(1)
        candidates = graph
    else:
        candidates, targets = torch.unique(links[:, 0] if r2l else links[:, 1], return_inverse=True)
    return rank_targets(embeddings[queries], embeddings[candidates], targets,
                        csls_k=csls_k if name.startswith("csls") else 0)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows and top-k groups of 4 scores, so that every block and group boundary is crossed."""
    monkeypatch.setattr(shared, "BLOCK_ELEMENTS", 700)
    monkeypatch.setattr(shared, "_GROUP", 4)


@pytest.fixture
def paths(monkeypatch):
    """Records which way protocol_ranks went: both directions from one block, or each direction on its own."""
    taken: list[str] = []
    both, one = shared._rank_both_ways, shared._rank_direction

    def spy_both(*args, **kwargs):
        taken.append("both_ways")
        return both(*args, **kwargs)

    def spy_one(*args, **kwargs):
        taken.append("direction")
        return one(*args, **kwargs)

    monkeypatch.setattr(shared, "_rank_both_ways", spy_both)
    monkeypatch.setattr(shared, "_rank_direction", spy_one)
    return taken


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("seed", "csls_k"), [(0, 3), (1, 1)])
@pytest.mark.parametrize("blocks", ["small", "default"])
def test_shared_ranks_equal_each_protocol_on_its_own(layout, seed, csls_k, blocks, paths, request):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    embeddings, links, kg1_ids, kg2_ids = _tied_pair(seed, layout)
    ranks = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS, csls_k=csls_k)
    assert paths == (["direction", "direction"] if layout == "shared_entities" else ["both_ways"])
    ties = 0
    for name in PROTOCOLS:
        expected = _reference_ranks(embeddings, links, kg1_ids, kg2_ids, name, csls_k)
        assert torch.equal(ranks[name].optimistic, expected.optimistic), name
        assert torch.equal(ranks[name].pessimistic, expected.pessimistic), name
        assert ranks[name].num_candidates == expected.num_candidates, name
        ties += int((expected.pessimistic > expected.optimistic).sum())
    assert ties > 50, "the example should be full of ties"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("csls_k", [0, 2, 3])
@pytest.mark.parametrize("chunk_size", [3, 4096])
def test_evaluate_alignment_shared_equals_per_protocol(layout, csls_k, chunk_size, small_blocks):
    embeddings, links, kg1_ids, kg2_ids = _tied_pair(10 + csls_k, layout)
    kwargs = {"csls_k": csls_k, "chunk_size": chunk_size, "ks": (1, 3, 10)}
    old = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, shared=False, **kwargs)
    new = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, **kwargs)
    assert new == old  # every metric of every protocol, both directions, exactly


@pytest.mark.parametrize("layout", LAYOUTS)
def test_any_subset_of_protocols_ranks_the_same(layout, small_blocks):
    embeddings, links, kg1_ids, kg2_ids = _tied_pair(3, layout)
    every = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS)
    for subset in [(name,) for name in PROTOCOLS] + [("r2l", "csls"), ("all_r2l", "standard"), ("csls_r2l",)]:
        ranks = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, subset)
        assert list(ranks) == list(subset)
        for name in subset:
            assert torch.equal(ranks[name].optimistic, every[name].optimistic), (subset, name)
            assert torch.equal(ranks[name].pessimistic, every[name].pessimistic), (subset, name)


@pytest.mark.parametrize("layout", ["one_to_one", "shared_entities"])
def test_standard_block_recomputed_when_it_may_not_be_kept(layout, small_blocks, paths):
    embeddings, links, kg1_ids, kg2_ids = _tied_pair(4, layout)
    kept = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS)
    paths.clear()
    recomputed = protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS, max_stored_bytes=0)
    assert paths == ["direction", "direction"]  # no room for the block: each direction on its own, CSLS recomputed
    for name in PROTOCOLS:
        assert torch.equal(kept[name].optimistic, recomputed[name].optimistic), name
        assert torch.equal(kept[name].pessimistic, recomputed[name].pessimistic), name


def test_gaussian_embeddings_metrics_agree():
    """Continuous embeddings (no designed ties), larger, one-to-one with a few links sharing nothing special."""
    gen = torch.Generator().manual_seed(7)
    n1, n2, num_links, dim = 400, 450, 300, 24
    x1 = torch.randn(n1, dim, generator=gen)
    x2 = torch.randn(n2, dim, generator=gen)
    x2[:num_links] = x1[:num_links] + 1.5 * torch.randn(num_links, dim, generator=gen)
    embeddings = torch.cat([x1, x2])
    kg1_ids, kg2_ids = torch.arange(n1), torch.arange(n1, n1 + n2)
    links = torch.stack([kg1_ids[:num_links], kg2_ids[:num_links]], 1)[torch.randperm(num_links, generator=gen)]
    old = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, shared=False, chunk_size=64)
    new = evaluate_alignment(embeddings, links, kg1_ids, kg2_ids, chunk_size=64)
    assert new.keys() == old.keys()
    for key, value in old.items():
        assert new[key] == pytest.approx(value, abs=1e-6), key
    assert 0.05 < new["test/hits@1"] < 0.95  # neither trivial nor hopeless


@pytest.mark.parametrize("width", [3, 4, 5, 17, 64, 65, 130])
@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_grouped_topk_is_exact_with_ties(width, k, monkeypatch):
    monkeypatch.setattr(shared, "_GROUP", 4)
    gen = torch.Generator().manual_seed(width * 10 + k)
    x = torch.randint(0, 4, (37, width), generator=gen).float() / 4  # few values: ties everywhere
    k = min(k, width)
    assert torch.equal(shared._row_topk(x, k), x.topk(k, dim=1).values)
    for block in (1, 5, 37):
        top = shared._TopK(x.size(0), width, k, min(k, x.size(0)), x.clone())
        running = shared._TopK(x.size(0), width, k, min(k, x.size(0)), None)
        for start in range(0, x.size(0), block):
            rows = slice(start, min(start + block, x.size(0)))
            top.add(rows, x[rows])
            running.add(rows, x[rows])
        expected = x.topk(min(k, x.size(0)), dim=0).values.t()
        assert torch.equal(top._col_topk(), expected) and torch.equal(running._col_topk(), expected)


def test_copies_finds_every_repeated_row():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=gen)
    assert shared._copies(x) is None
    x[[5, 9, 30]] = x[[2, 2, 7]]
    x[11] = -0.0 * x[11]  # -0.0 and 0.0 are equal
    x[12] = 0.0 * x[11]
    copies, originals = shared._copies(x)
    assert copies.tolist() == [5, 9, 12, 30] and originals.tolist() == [2, 2, 11, 7]


def test_identical_candidates_get_bitwise_identical_scores():
    gen = torch.Generator().manual_seed(1)
    linked, rest = torch.randn(30, 16, generator=gen), torch.randn(25, 16, generator=gen)
    linked[[4, 17]] = linked[[3, 3]]
    rest[[0, 9]] = torch.stack([linked[3], rest[2]])
    candidates = shared._Candidates(linked, rest)
    queries = torch.randn(50, 16, generator=gen)
    std, other = candidates.scores(queries, torch.empty(50, 30), torch.empty(50, 25))
    assert torch.equal(std[:, 4], std[:, 3]) and torch.equal(std[:, 17], std[:, 3])
    assert torch.equal(other[:, 0], std[:, 3]) and torch.equal(other[:, 9], other[:, 2])
    assert torch.allclose(torch.cat([std, other], 1), queries @ torch.cat([linked, rest]).t(), atol=1e-5)


def test_bit_exact_comparison_matches_rank_targets():
    """``tie_tolerance=0`` on vectors whose cosines are exact in float32 (entries +-1, 1 or 4 of them: unit or
    power-of-two norms): every path compares the very same floats."""
    gen = torch.Generator().manual_seed(2)
    n1, n2, num_links, dim = 60, 70, 40, 8
    x = torch.zeros(n1 + n2, dim)
    for i in range(n1 + n2):
        nnz = [1, 4][int(torch.randint(2, (1,), generator=gen))]
        x[i, torch.randperm(dim, generator=gen)[:nnz]] = torch.randint(0, 2, (nnz,), generator=gen).float() * 2 - 1
    kg1_ids, kg2_ids = torch.arange(n1), torch.arange(n1, n1 + n2)
    links = torch.stack([torch.randperm(n1, generator=gen)[:num_links],
                         n1 + torch.randperm(n2, generator=gen)[:num_links]], 1)
    ranks = protocol_ranks(x, links, kg1_ids, kg2_ids, PROTOCOLS, tie_tolerance=0.0)
    for name in PROTOCOLS:
        r2l = name in ("r2l", "all_r2l", "csls_r2l")
        queries = links[:, 1] if r2l else links[:, 0]
        graph, gold = (kg1_ids, links[:, 0]) if r2l else (kg2_ids, links[:, 1])
        if name.startswith("all"):
            candidates, targets = graph, gold - graph[0]
        else:
            candidates, targets = torch.unique(gold, return_inverse=True)
        expected = rank_targets(x[queries], x[candidates], targets, tie_tolerance=0.0,
                                csls_k=3 if name.startswith("csls") else 0)
        assert torch.equal(ranks[name].optimistic, expected.optimistic), name
        assert torch.equal(ranks[name].pessimistic, expected.pessimistic), name


def test_thresholds_count_both_ranks_in_one_comparison():
    scores = torch.tensor([[0.5, 0.5 + 1e-6, 0.5 - 1e-6, 0.6, 0.4, float(torch.tensor(0.5 - 1e-6).nextafter(
        torch.tensor(-1.0)))]])
    true = scores[:, 0]
    flags = shared._above(scores, shared._thresholds(true, 1e-6)[:, :, None], torch.empty(1, 2, 6))
    above, at_least = flags.sum(2)[0].tolist()
    assert above == float((scores > true + 1e-6).sum()) == 1.0
    assert at_least == float((scores >= true - 1e-6).sum()) == 4.0


def test_protocol_ranks_refuses_bad_input():
    embeddings, links, kg1_ids, kg2_ids = _tied_pair(0, "one_to_one")
    with pytest.raises(ValueError, match="unknown evaluation protocol"):
        protocol_ranks(embeddings, links, kg1_ids, kg2_ids, ("standard", "bogus"))
    with pytest.raises(ValueError, match="csls_k"):
        protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS, csls_k=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        protocol_ranks(embeddings, links, kg1_ids, kg2_ids, PROTOCOLS, chunk_size=0)
    broken = embeddings.clone()
    broken[links[0, 1]] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        evaluate_alignment(broken, links, kg1_ids, kg2_ids)


# --------------------------------------------------------------------------------------- the module


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = AlignmentDataModule(dict(spec("toy").__dict__), cache_dir=str(tmp_path_factory.mktemp("c")))
    dm.setup()
    return dm


def test_module_computes_the_embeddings_once_per_evaluation(datamodule):
    torch.manual_seed(0)
    module = AlignerModule(lambda features: EVA(features, hidden=(32, 32, 16)), datamodule.features,
                           optimizer=lambda params: torch.optim.Adam(params), one_to_one=("greedy", "hungarian"))
    forwards = []
    module.aligner.register_forward_hook(lambda *_: forwards.append(1))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False)
    validated = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    assert len(forwards) == 1 and "val/mrr" in validated
    tested = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert len(forwards) == 2  # the six protocols and both one-to-one decodings share one forward pass
    expected = evaluate_alignment(module.embeddings(), torch.as_tensor(datamodule.split.test), module.kg1_ids,
                                  module.kg2_ids, shared=False)
    for key, value in expected.items():  # logged by Lightning as float32
        assert tested[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert {"test_1to1/hits@1", "test_1to1_greedy/hits@1"} <= set(tested)

"""The speed-ups of the models leave what they compute unchanged (issue 29, part 5).

The fast paths -- :func:`gram_blocks` (one product for a self-similarity block's backward), :func:`icl_from_blocks`
(the ICL's backward in closed form, logits formed in cache-sized tiles), :func:`weighted_block_sum` (a joint
embedding's similarity from the per-modality blocks), the NCA loss's written-out backward, the GCN's and the sparse
feature heads' transposes prepared once -- are checked two ways: ``gradcheck`` in float64 on small inputs, and on the
toy pair, every aligner's training loss, its parts and the gradient of every parameter against the textbook
formulation (plain autograd, the code these paths replaced: patched in below), equal up to float32 rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GCNConv

from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.models.aligners.eva import EVA
from mmea_lightning.models.aligners.mclea import MCLEA
from mmea_lightning.models.aligners.meaformer import MEAformer
from mmea_lightning.models.aligners.mpsea import MPSEA
from mmea_lightning.models.encoders import feature_head, gcn
from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.gcn import GCNEncoder
from mmea_lightning.models.losses import icl, nca
from mmea_lightning.models.losses.icl import gram_blocks, icl_from_blocks, mask_diagonal, weighted_block_sum
from mmea_lightning.models.losses.nca import NCALoss, nca_from_embeddings

from .test_readers import spec

# ------------------------------------------------------------------------------------ textbook formulations


def textbook_gram_blocks(a, b):
    return a @ b.mT, a @ a.mT, b @ b.mT


def textbook_icl_from_blocks(sim_ab, sim_aa, sim_bb, temperature, ab_weight=0.5, keep=None, active=None):
    """The ICL as it was computed before: per batch, concatenation, scaling, masking and cross-entropy."""
    if sim_ab.dim() > 2:
        lead = sim_ab.shape[:-2]
        flat = [s.reshape(-1, *s.shape[-2:]) for s in (sim_ab, sim_aa, sim_bb)]
        keeps = keep.expand(*lead, sim_ab.shape[-1]).reshape(-1, sim_ab.shape[-1]) if keep is not None else None
        actives = active.reshape(-1) if active is not None else None
        out = [textbook_icl_from_blocks(flat[0][i], flat[1][i], flat[2][i], temperature, ab_weight,
                                        None if keeps is None else keeps[i],
                                        None if actives is None else actives[i:i + 1])
               for i in range(flat[0].shape[0])]
        return torch.stack(out).reshape(lead)
    if active is not None and not bool(active.all()):
        return sim_ab.sum() * 0
    t = temperature
    logits_ab, logits_aa, logits_bb = sim_ab / t, mask_diagonal(sim_aa / t), mask_diagonal(sim_bb / t)
    target = torch.arange(sim_ab.size(0))
    if keep is None:
        loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), target)
        loss_b = F.cross_entropy(torch.cat([logits_ab.t(), logits_bb], dim=1), target)
        return ab_weight * loss_a + (1 - ab_weight) * loss_b
    fill = -1e9
    dropped = ~keep.unsqueeze(0)
    logits_ab = logits_ab.masked_fill(dropped, fill)
    logits_ba = logits_ab.t().masked_fill(dropped, fill)
    weight = keep.float() / keep.sum().clamp(min=1)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa.masked_fill(dropped, fill)], 1), target, reduction="none")
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb.masked_fill(dropped, fill)], 1), target, reduction="none")
    return ab_weight * (loss_a * weight).sum() + (1 - ab_weight) * (loss_b * weight).sum()


def textbook_weighted_block_sum(sim, left, right):
    return (sim * left.unsqueeze(-1) * right.unsqueeze(-2)).sum(0)


def textbook_nca(left, right, alpha, beta):
    scores = left @ right.t()
    positive = scores.diagonal()
    exp_scores = torch.exp(alpha * scores)
    exp_positive = exp_scores.diagonal()
    loss = (torch.log1p(exp_scores.sum(0) - exp_positive) / alpha + torch.log1p(exp_scores.sum(1) - exp_positive)
            / alpha - beta * torch.log1p(F.relu(positive)))
    return loss.mean()


class _TextbookSparseMatmul:
    @staticmethod
    def apply(x, matrix, matrix_t):
        return torch.sparse.mm(matrix, x)


def textbook_meaformer_loss(model: MEAformer, links: torch.Tensor):
    """MEAformer's loss as it was written before: one ICLLoss call per modality before and after fusion, and one on
    the ``(M d)``-wide joint embedding."""
    embeddings = model.encoders()
    batch = len(links)
    entities = torch.cat([links[:, 0], links[:, 1]])
    local = torch.stack([torch.arange(batch), torch.arange(batch, 2 * batch)], dim=1)
    tokens = model.tokens(embeddings, entities)
    joint, hidden, _ = model.fusion(tokens)
    before = [model.icl(tokens[:, i], local) for i in range(len(model.modalities))]
    after = [model.icl(hidden[:, i], local) for i in range(len(model.modalities))]
    parts = {"joint": model.icl(joint, local), "before": model.weighting(before), "after": model.weighting(after)}
    return parts["joint"] + parts["before"] + parts["after"], parts


@contextmanager
def textbook(monkeypatch):
    """Every fast path replaced by its textbook formulation (plain autograd)."""
    with monkeypatch.context() as patch:
        patch.setattr(icl, "gram_blocks", textbook_gram_blocks)
        patch.setattr(icl, "icl_from_blocks", textbook_icl_from_blocks)
        patch.setattr(icl, "weighted_block_sum", textbook_weighted_block_sum)
        patch.setattr(nca, "nca_from_embeddings", textbook_nca)
        patch.setattr(gcn, "ConstantSparseMatmul", _TextbookSparseMatmul)
        patch.setattr(feature_head, "ConstantSparseMatmul", _TextbookSparseMatmul)
        yield


# ------------------------------------------------------------------------------------------- gradchecks


def _double(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).requires_grad_()


@pytest.mark.parametrize("tile", [1 << 17, 24])  # one tile, and many (rows tiled in threes)
def test_icl_blocks_gradcheck(tile, monkeypatch):
    monkeypatch.setattr(icl, "TILE_ELEMENTS", tile)
    a, b = _double(3, 5, 4, seed=1), _double(3, 5, 4, seed=2)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 1, 0, 0]], dtype=torch.bool)
    for kept in (None, keep):
        active = None if kept is None else kept.sum(-1) >= 2

        def loss(a, b, kept=kept, active=active):
            return icl_from_blocks(*gram_blocks(a, b), 0.3, 0.4, keep=kept, active=active)

        assert torch.autograd.gradcheck(loss, (a, b))
        want = textbook_icl_from_blocks(*textbook_gram_blocks(a, b), 0.3, 0.4, keep=kept, active=active)
        torch.testing.assert_close(loss(a, b), want)
    assert loss(a, b)[2] == 0  # a batch with one kept link adds nothing


def test_weighted_block_sum_and_nca_gradcheck():
    sim, left, right = _double(3, 2, 5, 5), _double(3, 2, 5, seed=1), _double(3, 2, 5, seed=2)
    assert torch.autograd.gradcheck(weighted_block_sum, (sim, left, right))
    assert torch.autograd.gradcheck(lambda s, w: weighted_block_sum(s, w, w), (sim, left))
    torch.testing.assert_close(weighted_block_sum(sim, left, right), textbook_weighted_block_sum(sim, left, right))
    emb_l, emb_r = _double(9, 4, seed=3), _double(9, 4, seed=4)

    def loss(emb_l, emb_r):
        return nca_from_embeddings(F.normalize(emb_l, dim=1), F.normalize(emb_r, dim=1), 5.0, 10.0)

    assert torch.autograd.gradcheck(loss, (emb_l, emb_r))
    torch.testing.assert_close(loss(emb_l, emb_r),
                               textbook_nca(F.normalize(emb_l, dim=1), F.normalize(emb_r, dim=1), 5.0, 10.0))
    with torch.no_grad():  # the path without autograd gives the same number
        torch.testing.assert_close(NCALoss(5.0, 10.0)(torch.cat([emb_l, emb_r]), torch.stack(
            [torch.arange(9), torch.arange(9, 18)], 1)), loss(emb_l, emb_r))


def test_gcn_and_sparse_head_match_pyg_and_dense():
    gen = torch.Generator().manual_seed(0)
    n = 25
    edges = torch.randint(0, n, (2, 60), generator=gen)  # directed: the transpose differs from the matrix
    adjacency = torch.sparse_coo_tensor(edges, torch.rand(60, generator=gen), (n, n)).coalesce().to_sparse_csr()
    encoder = GCNEncoder([6, 5, 3]).double()
    x = _double(n, 6)
    assert torch.autograd.gradcheck(lambda x: encoder(x, adjacency.double()), (x,))
    reference = x
    for i, layer in enumerate(encoder.layers):
        assert isinstance(layer, GCNConv)
        reference = layer(reference, adjacency.double())
        reference = F.relu(reference) if i + 1 < len(encoder.layers) else reference
    torch.testing.assert_close(encoder(x, adjacency.double()), reference)

    table = (torch.rand(30, 40, generator=gen) < 0.03).double() * torch.rand(30, 40, generator=gen).double()
    head = FeatureHead(table, 7).double()
    assert head.sparse
    out = head()
    torch.testing.assert_close(out, table @ head.linear.weight.t() + head.linear.bias)
    out.square().sum().backward()
    weight = head.linear.weight.detach().clone().requires_grad_()
    (table @ weight.t() + head.linear.bias.detach()).square().sum().backward()
    torch.testing.assert_close(head.linear.weight.grad, weight.grad)


# -------------------------------------------------------------------------------- aligners on the toy pair


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = AlignmentDataModule(dict(spec("toy").__dict__), cache_dir=str(tmp_path_factory.mktemp("c")))
    dm.setup()
    return dm


def _loss_and_grads(model, links, loss_fn=None, seed=1):
    model.zero_grad()
    torch.manual_seed(seed)  # dropout and CPRL's sampled actions draw the same numbers on both paths
    loss, parts = (loss_fn or model.training_loss)(links)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in parts.items()}, grads


ALIGNERS = {
    "eva": lambda f: EVA(f, modalities=("structure", "relation", "attribute", "image")),
    "mclea": lambda f: MCLEA(f, hidden=32, head_dim=16, chunk_size=64),
    "meaformer": lambda f: MEAformer(f, hidden=32, feedforward_dim=24),
    "mpsea": lambda f: MPSEA(f, dim=30, ffn_dim=27, numeric_ffn_dim=16, chunk_size=64),
}


@pytest.mark.parametrize("name", list(ALIGNERS))
def test_aligner_losses_and_gradients_unchanged(name, datamodule, monkeypatch):
    torch.manual_seed(0)
    model = ALIGNERS[name](datamodule.features)
    links = datamodule.seed_links
    assert len(links) > 64  # several chunks where the aligner has them
    loss, parts, grads = _loss_and_grads(model, links)
    with textbook(monkeypatch):
        reference_fn = (lambda lk: textbook_meaformer_loss(model, lk)) if name == "meaformer" else None
        want_loss, want_parts, want_grads = _loss_and_grads(model, links, reference_fn)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    assert parts.keys() == want_parts.keys()
    for key in parts:
        torch.testing.assert_close(parts[key], want_parts[key], rtol=1e-5, atol=1e-5, msg=key)
    assert grads.keys() == want_grads.keys() and len(grads) > 5
    for key, grad in grads.items():
        scale = want_grads[key].abs().max().clamp(min=1e-6)
        torch.testing.assert_close(grad / scale, want_grads[key] / scale, rtol=1e-4, atol=1e-5, msg=key)

"""MPSEA: every component on its own (Eq. 1-13), every ablation, the aligner and end-to-end runs on the toy pair."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter

from mmea_lightning.lightning.datamodule import AlignmentDataModule
from mmea_lightning.models.aligners.mpsea import ABLATIONS, MPSEA
from mmea_lightning.models.encoders.feature_head import FeatureHead
from mmea_lightning.models.encoders.multi_weight_gat import MultiWeightGATConv, MultiWeightGATEncoder
from mmea_lightning.models.encoders.numeric import DNEFEncoder
from mmea_lightning.models.encoders.visual import VisualEncoder
from mmea_lightning.models.fusion_layers.cross_modal_weights import cross_modal_weights, weighted_concat
from mmea_lightning.models.fusion_layers.graph_transformer import GraphStructureTransformer
from mmea_lightning.models.fusion_layers.mmpf import PreSynergisticFusion
from mmea_lightning.models.fusion_layers.outlooker import OutlookAttention, VisualFeedForward
from mmea_lightning.models.losses.cprl import CPRL, CPRLReward
from mmea_lightning.train import run

from .conftest import make_config
from .test_readers import spec

# small widths: 30 = 5 fusion heads x 6 = 2 GAT heads x 15; the visual FFN's 27 = 3 channels x 3 x 3
SMALL = {"dim": 30, "ffn_dim": 27, "numeric_ffn_dim": 16}
SMALL_OVERRIDES = ["model=mpsea", "model.module.aligner.dim=30", "model.module.aligner.ffn_dim=27",
                   "model.module.aligner.numeric_ffn_dim=16"]


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    dm = AlignmentDataModule(dict(spec("toy").__dict__), cache_dir=str(tmp_path_factory.mktemp("c")))
    dm.setup()
    return dm


def _graph(num_nodes: int, num_edges: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    ei = ei[:, ei[0] != ei[1]]
    return torch.cat([ei, ei.flip(0)], dim=1)


# ------------------------------------------------------------------------------------------- multi-weight GAT


def test_plain_gat_is_pyg_gatconv():
    torch.manual_seed(0)
    x, edge_index = torch.randn(20, 8), _graph(20, 40)
    ours, pyg = MultiWeightGATConv(8, 8, heads=2, multi_weight=False), GATConv(8, 4, heads=2)
    assert ours.lin_node is None
    with torch.no_grad():
        pyg.lin.weight.copy_(ours.lin_nbr.weight)
        pyg.att_src.copy_(ours.att_nbr.view(1, 2, 4))
        pyg.att_dst.copy_(ours.att_node.view(1, 2, 4))
        ours.bias.copy_(torch.randn(8))
        pyg.bias.copy_(ours.bias)
    torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("self_message", ["neighbour", "node"])
def test_multi_weight_gat_separate_maps_and_self_loop(self_message):
    torch.manual_seed(0)
    conv = MultiWeightGATConv(6, 6, heads=2, self_message=self_message)
    x, edge_index = torch.randn(9, 6), torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]])  # 5..8 isolated
    edges, alpha = conv.attention(x, edge_index)
    torch.testing.assert_close(scatter(alpha, edges[1], dim=0, dim_size=9, reduce="sum"), torch.ones(9, 2))
    # Eq. 1 on the edge 0 -> 1 of head 0: LeakyReLU(a_node . W_i h_1 + a_nbr . W_j h_0), softmax over {0, 1, 2}
    w_i, w_j = conv.lin_node.weight[:3], conv.lin_nbr.weight[:3]

    def logit(i, j, w_src):
        return F.leaky_relu(conv.att_node[0] @ (w_i @ x[i]) + conv.att_nbr[0] @ (w_src @ x[j]), 0.2)

    logits = torch.stack([logit(1, 0, w_j), logit(1, 1, w_j), logit(1, 2, w_j)])  # the self-loop scored by Eq. 1
    expected_alpha = logits.softmax(0)
    got = {int(s): alpha[k, 0] for k, (s, t) in enumerate(edges.t()) if t == 1}
    torch.testing.assert_close(torch.stack([got[0], got[1], got[2]]), expected_alpha)
    # the neighbours' messages go through W_j; the node's own through W_j ("neighbour") or W_i ("node")
    w_self = w_j if self_message == "neighbour" else w_i
    expected = expected_alpha[0] * (w_j @ x[0]) + expected_alpha[1] * (w_self @ x[1]) + expected_alpha[2] * (w_j @ x[2])
    torch.testing.assert_close(conv(x, edge_index)[1, :3], expected + conv.bias[:3], atol=1e-5, rtol=1e-5)
    # an isolated node keeps its own message; with W_i = W_j the layer is the plain GAT
    own_map = conv.lin_nbr if self_message == "neighbour" else conv.lin_node
    torch.testing.assert_close(conv(x, edge_index)[7], own_map(x[7]) + conv.bias, atol=1e-5, rtol=1e-5)
    plain = MultiWeightGATConv(6, 6, heads=2, multi_weight=False)
    plain.load_state_dict({k: v for k, v in conv.state_dict().items() if not k.startswith("lin_node")})
    with torch.no_grad():
        conv.lin_node.weight.copy_(conv.lin_nbr.weight)
    torch.testing.assert_close(conv(x, edge_index), plain(x, edge_index), atol=1e-5, rtol=1e-5)


def test_multi_weight_gat_rejects_unknown_self_message():
    with pytest.raises(ValueError, match="self_message"):
        MultiWeightGATConv(6, 6, heads=2, self_message="root")


@pytest.mark.parametrize(("multi_weight", "self_message"), [(True, "neighbour"), (True, "node"), (False, "neighbour")])
def test_gat_fused_propagate_and_target_paths_agree_with_gradients(multi_weight, self_message):
    torch.manual_seed(0)
    edge_index, targets = _graph(30, 70), torch.tensor([4, 0, 29, 4, 17])
    fused = MultiWeightGATConv(8, 6, heads=2, multi_weight=multi_weight, self_message=self_message)
    plain = MultiWeightGATConv(8, 6, heads=2, multi_weight=multi_weight, fused=False, self_message=self_message)
    plain.load_state_dict(fused.state_dict())
    outs, grads = [], []
    for conv, tgt in [(fused, None), (plain, None), (fused, targets), (plain, targets)]:
        x = torch.randn(30, 8, generator=torch.Generator().manual_seed(1)).requires_grad_()
        out = conv(x, edge_index, tgt)
        out = out[targets] if tgt is None else out
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        outs.append(out.detach())
        grads.append([x.grad] + [p.grad.clone() for p in conv.parameters()])
        conv.zero_grad()
    for out, grad in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(out, outs[0], atol=1e-5, rtol=1e-5)
        for g, g0 in zip(grad, grads[0]):
            torch.testing.assert_close(g, g0, atol=1e-5, rtol=1e-4)


def test_gat_encoder_two_layers_two_heads_and_targets():
    torch.manual_seed(0)
    encoder = MultiWeightGATEncoder(12, dropout=0.2).eval()
    assert len(encoder.layers) == 2 and all(layer.heads == 2 and layer.multi_weight for layer in encoder.layers)
    assert not any(layer.multi_weight for layer in MultiWeightGATEncoder(12, multi_weight=False).layers)
    x, edge_index, targets = torch.randn(25, 12), _graph(25, 50), torch.tensor([3, 11, 24])
    full = encoder(x, edge_index)
    assert full.shape == (25, 12)
    torch.testing.assert_close(encoder(x, edge_index, targets), full[targets], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- feature encoders


def test_bag_of_words_fc_sparse_and_dense_agree():  # Eq. 2 is FeatureHead over the BoW table
    torch.manual_seed(0)
    table = (torch.rand(40, 30) < 0.02).float() * 3
    sparse, dense = FeatureHead(table, 8), FeatureHead(table, 8, sparse_below_density=0.0)
    dense.load_state_dict(sparse.state_dict())
    assert sparse.sparse and not dense.sparse
    torch.testing.assert_close(sparse(), table @ sparse.linear.weight.t() + sparse.linear.bias)
    torch.testing.assert_close(sparse(), dense())


def test_visual_encoder_rows_and_mask():
    torch.manual_seed(0)
    table, has = torch.randn(10, 16), torch.tensor([True] * 7 + [False] * 3)
    enc = VisualEncoder(table, 5, has)
    index = torch.tensor([9, 2])
    torch.testing.assert_close(enc(index), enc()[index])
    torch.testing.assert_close(enc(), enc.linear(table))
    assert enc.has_image.tolist() == has.tolist()
    with pytest.raises(ValueError, match="non-empty"):
        VisualEncoder(torch.empty(0, 4), 5)


def test_dnef_equation_4_pooling_and_missing_values():
    torch.manual_seed(0)
    values = torch.tensor([[0.5, 0.0, -1.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])
    enc = DNEFEncoder(values, mask, dim=4, ffn_dim=6)
    phi = enc.phi(torch.tensor([0.5, 0.0, -1.0]), torch.tensor([0, 1, 2]))  # Eq. 4
    torch.testing.assert_close(phi[2], -1.0 * enc.gamma[2] + enc.zeta[2])
    out = enc()
    torch.testing.assert_close(out[0], enc.ffn(phi.mean(0)))  # a known 0.0 still counts (mask, not value)
    torch.testing.assert_close(out[2], enc.ffn(2.0 * enc.gamma[0] + enc.zeta[0]))
    assert torch.equal(out[1], torch.zeros(4)) and enc.has_values.tolist() == [True, False, True]
    torch.testing.assert_close(enc(torch.tensor([2, 0])), out[[2, 0]])


# ------------------------------------------------------------------------------------------- fusion layers


@pytest.mark.parametrize("score", ["softmax", "score", "sigmoid"])
def test_graph_structure_transformer(score):
    torch.manual_seed(0)
    layer = GraphStructureTransformer(10, heads=5, ffn_dim=12, attention_score=score).eval()
    x = torch.randn(4, 10)
    out, keys, values, beta = layer(x)
    assert out.shape == (4, 10) and keys.shape == values.shape == (4, 5, 2) and beta.shape == (4, 5)
    torch.testing.assert_close(keys.reshape(4, 10), layer.key(x))
    hidden = layer.attn_norm(x + layer.out(layer.value(x)))  # MHA over one token = V W_o, whatever beta_g reads
    torch.testing.assert_close(out, layer.ffn_norm(hidden + layer.ffn(hidden)))
    if score == "softmax":  # the probability of the single key
        assert layer.query is None and torch.equal(beta, torch.ones(4, 5))
        return
    q, k = layer.query(x).view(4, 5, 2), layer.key(x).view(4, 5, 2)
    expected = torch.stack([torch.stack([q[b, h] @ k[b, h] / math.sqrt(2) for h in range(5)]) for b in range(4)])
    torch.testing.assert_close(beta, expected.sigmoid() if score == "sigmoid" else expected)
    # beta_g feeds only Eq. 9: W_q^g learns through the cross-modal weights
    cross_modal_weights(torch.rand(4, 5, 2), beta)[:, 0].sum().backward()
    assert layer.query.weight.grad.abs().sum() > 0


def test_graph_structure_transformer_rejects_unknown_score():
    with pytest.raises(ValueError, match="attention_score must be one of"):
        GraphStructureTransformer(10, heads=5, attention_score="dot")


def _outlook_reference(oa: OutlookAttention, x: torch.Tensor) -> torch.Tensor:
    """VOLO's outlook attention by explicit loops (one head): every position attends over its k x k window with
    weights predicted from itself and writes the result back to the window's positions (summed)."""
    _, c, s, _ = x.shape
    k, pad = oa.kernel_size, oa.padding
    v = F.pad(oa.value(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), (pad,) * 4)  # (B, C, S + 2p, S + 2p)
    out = torch.zeros_like(v)
    for i in range(s):
        for j in range(s):
            a = oa.attn(x[:, :, i, j]).view(-1, k * k, k * k).mul(oa.scale).softmax(-1)  # (B, k2, k2)
            window = v[:, :, i:i + k, j:j + k].reshape(-1, c, k * k)  # (B, C, k2)
            out[:, :, i:i + k, j:j + k] += torch.einsum("bqp,bcp->bcq", a, window).view(-1, c, k, k)
    out = out[:, :, pad:pad + s, pad:pad + s]
    return oa.proj(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_outlook_attention_matches_loop_reference_and_visual_ffn_switches():
    torch.manual_seed(0)
    oa, x = OutlookAttention(3, heads=1, kernel_size=3), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(oa(x), _outlook_reference(oa, x), atol=1e-5, rtol=1e-5)
    full = VisualFeedForward(6, 12, channels=3)  # 12 = 3 x 2 x 2
    plain = VisualFeedForward(6, 12, use_outlooker=False, use_conv=False)  # w/o OC
    no_oa = VisualFeedForward(6, 12, use_outlooker=False, channels=3)  # w/o OA: the convolution stays
    assert full.outlooker is not None and full.conv is not None and no_oa.outlooker is None and no_oa.conv is not None
    plain.load_state_dict({k: v for k, v in full.state_dict().items() if k.startswith("fc")})
    tokens = torch.randn(5, 6)
    torch.testing.assert_close(plain(tokens), full.fc2(F.relu(full.fc1(tokens))))
    assert not torch.allclose(full(tokens), plain(tokens))
    with pytest.raises(ValueError, match="square"):
        VisualFeedForward(6, 10, channels=3)


def _mmpf(**kwargs) -> PreSynergisticFusion:
    torch.manual_seed(0)
    return PreSynergisticFusion(["relation", "attribute", "numeric", "image"], dim=10, heads=5, ffn_dim=12,
                                dropout=0.0, visual_ffn={"channels": 3}, **kwargs).eval()


def test_mmpf_shapes_injection_and_lambda_gradients():
    fusion = _mmpf()
    tokens, graph_kv = torch.randn(4, 6, 10), (torch.randn(6, 5, 2), torch.randn(6, 5, 2))  # modality-major
    late, beta = fusion(tokens, graph_kv)
    assert late.shape == (4, 6, 10) and beta.shape == (6, 5, 4)
    # every head's attention mass (4 queries) lands on r, a, n, the graph slot and the visual slot
    assert (beta.sum(-1) < 4).all() and (beta > 0).all()
    (late.square().sum() + beta.sum()).backward()
    assert fusion.lambda_g.grad is not None and fusion.lambda_g.grad != 0
    assert fusion.lambda_v.grad is not None and fusion.lambda_v.grad != 0
    # the graph keys/values matter exactly when injected
    other = (graph_kv[0] + 1, graph_kv[1] - 1)
    assert not torch.allclose(fusion(tokens, other)[0], late)
    no_graph = _mmpf(inject_graph=False)
    assert no_graph.lambda_g is None
    torch.testing.assert_close(no_graph(tokens, None)[0], no_graph(tokens, other)[0])
    # an entity's fusion does not depend on its batch
    torch.testing.assert_close(fusion(tokens[:, 2:3], (graph_kv[0][2:3], graph_kv[1][2:3]))[0], late[:, 2:3])


def test_mmpf_without_visual_injection_keeps_the_image_as_a_modality_key():
    """w/o MMPF-img removes the injected lambda_v K_v slot only: Eq. 7 still attends to the image's own key."""
    full, fusion = _mmpf(), _mmpf(inject_visual=False)
    assert fusion.lambda_v is None
    tokens, graph_kv = torch.randn(4, 3, 10), (torch.randn(3, 5, 2), torch.randn(3, 5, 2))
    late, beta = fusion(tokens, graph_kv)
    assert (beta[..., 3] > 0).all()  # the image receives attention through its own key
    changed = tokens.clone()
    changed[3] += 1.0
    assert not torch.allclose(fusion(changed, graph_kv)[0][:3], late[:3])  # the text modalities read the image
    # the only difference from the full model is the injected slot: scaled by lambda_v = 0 it is a zero key/value
    with torch.no_grad():
        full.lambda_v.zero_()
    full_late, full_beta = full(tokens, graph_kv)
    assert not torch.allclose(full_late, late)  # a zero key still takes attention mass (exp(0) = 1)
    assert full_beta.shape == beta.shape == (3, 5, 4)


def test_mmpf_over_the_image_alone_attends_to_its_own_key():
    torch.manual_seed(0)
    fusion = PreSynergisticFusion(["image"], dim=10, heads=5, ffn_dim=12, inject_graph=False, inject_visual=False,
                                  visual_ffn={"channels": 3})
    late, beta = fusion(torch.randn(1, 3, 10))
    assert late.shape == (1, 3, 10) and torch.allclose(beta, torch.ones(3, 5, 1))


def test_mmpf_masks_missing_modalities():
    fusion = _mmpf()
    tokens, graph_kv = torch.randn(4, 3, 10), (torch.randn(3, 5, 2), torch.randn(3, 5, 2))
    present = torch.ones(3, 4, dtype=torch.bool)
    present[1, 2] = False  # entity 1 has no numeric values
    late, beta = fusion(tokens, graph_kv, present)
    changed = tokens.clone()
    changed[2, 1] = torch.randn(10)
    late2, _ = fusion(changed, graph_kv, present)
    others = [0, 1, 3]
    torch.testing.assert_close(late2[others, 1], late[others, 1])  # other modalities never read the missing one
    assert not torch.allclose(late2[2, 1], late[2, 1])  # its own query still runs (its weight is 0 downstream)
    assert (beta[1, :, 2] < 1.0 + 1e-6).all() and (beta[0, :, 2] > beta[1, :, 2]).all()
    rows = [0, 2]
    torch.testing.assert_close(late[:, rows], fusion(tokens[:, rows], (graph_kv[0][rows], graph_kv[1][rows]))[0])


def test_cross_modal_weights_equations_8_9_and_masking():
    beta_g = torch.tensor([[1.0, 1.0]])  # (B=1, N_s=2)
    beta_m1 = torch.tensor([[[0.5, 1.5, 2.0], [1.0, 0.5, 1.0]]])  # (B, N_s, |M1|=3)
    w = cross_modal_weights(beta_m1, beta_g)
    s_g = 2.0 / math.sqrt(2)
    s = [1.5 / math.sqrt(6), 2.0 / math.sqrt(6), 3.0 / math.sqrt(6)]
    denominator = sum(math.exp(v) for v in s) + math.exp(s_g)
    expected = [math.exp(s_g) / denominator] + [math.exp(v) / denominator for v in s]  # Eq. 9, Eq. 8
    torch.testing.assert_close(w, torch.tensor([expected]))
    present = torch.tensor([[True, True, False, True]])
    masked = cross_modal_weights(beta_m1, beta_g, present)
    assert masked[0, 2] == 0 and torch.isclose(masked.sum(), torch.tensor(1.0))
    torch.testing.assert_close(masked[0, [0, 1, 3]], torch.tensor(expected)[[0, 1, 3]] / (1 - expected[2]))
    tokens = torch.randn(1, 4, 3)
    joint = weighted_concat(tokens, masked)
    torch.testing.assert_close(joint[0, 3:6], masked[0, 1] * F.normalize(tokens[0, 1], dim=0))
    assert torch.equal(joint[0, 6:9], torch.zeros(3))


# ------------------------------------------------------------------------------------------- CPRL


def test_cprl_reward_and_penalty_equal_equations_10_to_12_by_hand():
    reward = CPRLReward(theta=0.63, alpha=0.34, beta=0.63)
    joint = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    reference = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    out = reward(joint, reference)
    # by hand: cos = 1/sqrt(2), 0, 1
    cos = [0.70710678, 0.0, 1.0]
    mi = [2.02811498, 1.0, 2.71828183]
    r = [0.07710678 + 0.34 * 2.02811498, 0.0 + 0.34 * 1.0, 0.37 + 0.34 * 2.71828183]
    p = [0.63 * (0.63 - 0.70710678), 0.63 * 0.63, 0.63 * (0.63 - 1.0)]
    for key, want in [("cos", cos), ("mi", mi), ("reward", r), ("penalty", p)]:
        torch.testing.assert_close(out[key], torch.tensor(want), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out["fr"], torch.tensor(r) - torch.tensor(p), atol=1e-6, rtol=1e-6)


def test_cprl_reinforce_loss_and_gradients():
    torch.manual_seed(0)
    cprl = CPRL(joint_dim=6)
    joint = torch.randn(64, 6, requires_grad=True)
    reference = torch.randn(64, 6)
    torch.manual_seed(1)
    loss, parts = cprl(joint, reference)
    # reproduce Eq. 13 with the same sampled actions: R(1) = fr, R(0) = 0
    signal = cprl.reward(joint, reference)
    log_probs = cprl.action_log_probs(joint, signal["mi"])
    torch.manual_seed(1)
    action = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
    expected = -(action * signal["fr"].detach() * log_probs[torch.arange(64), action]).mean()
    torch.testing.assert_close(loss, expected)
    state = torch.cat([joint, signal["mi"].unsqueeze(1)], dim=1)  # pi = softmax(W_p [J ; MI]), Eq. 13
    torch.testing.assert_close(log_probs, F.log_softmax(cprl.policy(state), dim=1))
    torch.manual_seed(1)
    torch.testing.assert_close(cprl(joint, cos=signal["cos"])[0], loss)
    with pytest.raises(ValueError, match="exactly one"):
        cprl(joint)
    assert 0 < parts["match_rate"] < 1
    loss.backward()
    assert cprl.policy.weight.grad.abs().sum() > 0 and joint.grad.abs().sum() > 0
    detached = CPRL(joint_dim=6, detach_state=True)
    joint2 = joint.detach().clone().requires_grad_()
    detached(joint2, reference)[0].backward()
    assert detached.policy.weight.grad.abs().sum() > 0 and joint2.grad is None


# ------------------------------------------------------------------------------------------- the aligner


def test_mpsea_training_step_gradients_and_forward(datamodule):
    torch.manual_seed(0)
    model = MPSEA(datamodule.features, **SMALL)
    assert model.modalities == ["structure", "relation", "attribute", "numeric", "image"]
    loss, parts = model.training_loss(datamodule.seed_links)
    assert torch.isfinite(loss) and {"joint", "icl", "licl", "rl"} <= set(parts)
    torch.testing.assert_close(loss, parts["joint"] + parts["icl"] + parts["licl"] + parts["rl"])
    loss.backward()
    assert model.mmpf.lambda_g.grad != 0 and model.mmpf.lambda_v.grad != 0
    assert model.cprl.policy.weight.grad.abs().sum() > 0
    assert model.entity_embedding.weight.grad.abs().sum() > 0 and model.numeric.gamma.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        emb = model()
        assert emb.shape == (datamodule.features.num_entities, 5 * 30)
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(emb)))
        # a training step embeds only its links' entities: the same rows as embedding everything
        index = datamodule.seed_links[:7].flatten()
        joint = model.joint(model.encode(index), model.present[index])
        torch.testing.assert_close(F.normalize(joint, dim=1), emb[index], atol=1e-5, rtol=1e-4)
    info = model.describe()
    assert info["ablation"] is None and set(info["mean_modality_weights"]) == set(model.modalities)
    assert info["components"]["outlooker"] and info["components"]["gat"] == "multi-weight"


def _masked_icl(model: MPSEA, embeddings: torch.Tensor, links: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """The shared ICLLoss over the links whose two entities both have the modality."""
    keep = present[links[:, 0]] & present[links[:, 1]]
    return model.icl(embeddings, links[keep])


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_paired_losses_equal_the_shared_icl(chunk_size, datamodule):
    torch.manual_seed(0)
    model = MPSEA(datamodule.features, chunk_size=chunk_size, **SMALL)
    links = datamodule.seed_links[:60]
    local = torch.stack([torch.arange(60), torch.arange(60, 120)], dim=1)
    entities = torch.cat([links[:, 0], links[:, 1]])
    present = model.present[entities]
    tokens = model.encode(entities)
    late, weights = model.fuse(tokens, present)
    licl, joint = model.paired_losses(late, present, weights)
    torch.testing.assert_close(joint, model.icl(weighted_concat(late.transpose(0, 1), weights), local))  # Eq. 15
    early, none = model.paired_losses(torch.stack([tokens[m] for m in model.modalities]), present)
    assert none is None
    for i, m in enumerate(model.modalities):
        if chunk_size is None or present[:, i].all():  # chunks of the kept links = kept links of the chunks
            torch.testing.assert_close(licl[i], _masked_icl(model, late[i], local, present[:, i]), msg=m)
            torch.testing.assert_close(early[i], _masked_icl(model, tokens[m], local, present[:, i]), msg=m)
    assert not present[:, model.modalities.index("numeric")].all()  # the masked path ran
    # CPRL's cos(J, R) from the weights equals the cosine of the (M d)-wide vectors
    joint_vectors = weighted_concat(late.transpose(0, 1), weights)
    torch.testing.assert_close(model.joint_reference_cosine(weights, present),
                               F.cosine_similarity(joint_vectors, model.reference(late, present), dim=1))


def test_mpsea_masks_entities_without_numeric_values(datamodule):
    torch.manual_seed(0)
    model = MPSEA(datamodule.features, **SMALL).eval()
    lacking = (~datamodule.features.masks["numeric"]).nonzero().flatten()
    assert len(lacking) > 0
    column = model.modalities.index("numeric")
    assert not model.present[lacking, column].any()
    with torch.no_grad():
        model()
    assert (model._last_weights[lacking, column] == 0).all()
    assert (model._last_weights[model.present[:, column], column] > 0).all()


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_every_ablation_builds_and_trains_one_step(name, datamodule):
    torch.manual_seed(0)
    model = MPSEA(datamodule.features, ablation=name, **SMALL)
    loss, _ = model.training_loss(datamodule.seed_links[:64])
    loss.backward()
    assert torch.isfinite(loss)
    components, full = model.components(), model.components(model.full_switches)
    info = model.describe()
    assert info["ablation"] == ABLATIONS[name][0] and info["ablation_effective"] is True
    changes = ABLATIONS[name][1]
    if "drop" in changes:
        assert changes["drop"] not in model.modalities and len(model.modalities) == 4
    else:
        assert components != full
    expected = {
        "wo_mmpf_img": {"mmpf_visual_injection": False}, "wo_mmpf_gph": {"mmpf_graph_injection": False},
        "wo_mmpf": {"mmpf_visual_injection": False, "mmpf_graph_injection": False},
        "wo_oa": {"outlooker": False, "conv": True}, "wo_oc": {"outlooker": False, "conv": False},
        "wo_cprl": {"cprl": False}, "repl_gat": {"gat": "plain"},
    }.get(name, {})
    assert all(components[key] == value for key, value in expected.items())
    assert (model.cprl is None) == (name == "wo_cprl")


def test_modality_order_text_first_image_last(datamodule):
    model = MPSEA(datamodule.features, surface=True, modalities=["image", "structure", "numeric", "relation"], **SMALL)
    assert model.modalities == ["structure", "numeric", "relation", "name_char", "image"]  # names are text
    assert model.describe()["modalities_dropped"] == ["name_sbert"]
    with pytest.raises(ValueError, match="last"):
        PreSynergisticFusion(["image", "relation"], dim=10, heads=5)


def test_unknown_ablation_lists_the_valid_ones(datamodule):
    with pytest.raises(ValueError, match="wo_mmpf_img.*w/o MMPF-img.*repl_gat"):
        MPSEA(datamodule.features, ablation="wo_images", **SMALL)


def test_no_image_features_drops_the_visual_modality_and_flags_visual_ablations(datamodule):
    features = datamodule.features
    without = type(features)(**{**features.__dict__,
                                "modalities": {k: v for k, v in features.modalities.items() if k != "image"},
                                "masks": {k: v for k, v in features.masks.items() if k != "image"}})
    model = MPSEA(without, **SMALL)
    info = model.describe()
    assert info["modalities_dropped"] == ["image"] and "image" not in model.modalities
    assert not info["components"]["outlooker"] and not info["components"]["mmpf_visual_injection"]
    assert model.mmpf.lambda_v is None
    for name in ("wo_oa", "wo_oc", "wo_mmpf_img", "wo_img"):
        info = MPSEA(without, ablation=name, **SMALL).describe()
        assert info["ablation_effective"] is False and "changes nothing" in info["ablation_note"]
    with pytest.raises(ValueError, match="image"):
        MPSEA(without, strict_modalities=True, **SMALL)


def test_mpsea_end_to_end(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, [*SMALL_OVERRIDES, "model.max_epochs=30", "model.check_val_every_n_epoch=10",
                                            "model.module.aligner.chunk_size=null", "model.module.optimizer.lr=0.002"])
    assert cfg.model.module.aligner.beta == cfg.model.module.aligner.theta == 0.63
    summary = run(cfg)
    assert summary["run"]["model"] == "mpsea" and summary["run"]["ablation"] is None
    assert summary["test/hits@1"] > 0.25, summary["test/hits@1"]
    assert summary["run"]["modalities_used"] == ["structure", "relation", "attribute", "numeric", "image"]


def test_mpsea_iterative_end_to_end(tmp_path, cache_dir):
    cfg = make_config(tmp_path, cache_dir, [*SMALL_OVERRIDES, "model.max_epochs=8", "model.check_val_every_n_epoch=4",
                                            "model.ablation=wo_cprl", "training.iterative=true",
                                            "training.expansion.start_epoch=2", "training.expansion.every=1",
                                            "training.expansion.window=2"])
    summary = run(cfg)
    history = summary["run"]["iterative"]
    assert summary["run"]["iterative_training"] and history and summary["run"]["ablation"] == "w/o CPRL"
    assert summary["run"]["num_seed_links"] == summary["run"]["split"]["train"] + sum(h["added"] for h in history)

"""MPSEA's cross-modal deep-perception reinforcement learning (CPRL, Sec. 3.5, Eq. 10-13 of the MPSEA paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CPRL", "CPRLReward"]


class CPRLReward(nn.Module):
    """Eq. 10-12 for every entity: ``J (B, D)``, ``R (B, D)`` -> dict of ``(B,)`` tensors.

    ``cos = cos_sim(J, R)``; ``mi = exp(cos)`` (Eq. 10); ``reward = max(cos - theta, 0) + alpha * mi`` (Eq. 11);
    ``penalty = beta * (theta - cos)``, ``fr = reward - penalty`` (Eq. 12). The paper calls ``beta`` "proportional to
    theta" without a value; the config sets ``beta = theta`` (ratio 1).
    """

    def __init__(self, theta: float = 0.63, alpha: float = 0.34, beta: float = 0.63):
        super().__init__()
        self.theta, self.alpha, self.beta = float(theta), float(alpha), float(beta)

    def forward(self, joint: Tensor, reference: Tensor) -> dict[str, Tensor]:
        return self.from_cosine(F.cosine_similarity(joint, reference, dim=1, eps=1e-8))

    def from_cosine(self, cos: Tensor) -> dict[str, Tensor]:
        """Eq. 10-12 from ``cos (B,) = cos_sim(J, R)`` already known."""
        mi = torch.exp(cos)
        reward = torch.clamp(cos - self.theta, min=0.0) + self.alpha * mi
        penalty = self.beta * (self.theta - cos)
        return {"cos": cos, "mi": mi, "reward": reward, "penalty": penalty, "fr": reward - penalty}

    def extra_repr(self) -> str:
        return f"theta={self.theta}, alpha={self.alpha}, beta={self.beta}"


class CPRL(nn.Module):
    """The CPRL loss: ``J (B, D)`` predicted (late, cross-modally weighted) joint embeddings and ``R (B, D)`` the
    modality-wise concatenations -> ``(L_RL, parts)``.

    * Reward ``fr(e_u)`` of Eq. 10-12 (:class:`CPRLReward`).
    * Policy (Eq. 13): ``pi(. | e_u) = softmax(W_p [J_u ; MI(e_u)])`` over the actions ``{0: mismatch, 1: match}``
      (one linear layer ``W_p``).
    * REINFORCE (Eq. 13): an action ``a_u ~ pi(. | e_u)`` is sampled per entity (the argmax outside training) and
      ``L_RL = -mean_u R_u(a_u) log pi(a_u | e_u)``.

    Choices where the paper is vague (its reward does not depend on the action, which leaves REINFORCE without a
    learning signal -- the expected gradient of ``fr * log pi(a)`` over ``a`` is 0 for an action-free ``fr``):

    * the reward/penalty is *received by the "match" action*: ``R_u(1) = fr(e_u)``, ``R_u(0) = 0`` -- "when the
      similarity exceeds theta ... the model receives a reward; below it a penalty", and "the higher the similarity
      and mutual information, the greater the probability of [the match] action"; the policy thus learns to claim a
      match exactly when the fusion of ``e_u`` is good (``fr > 0``);
    * the reward is a constant for the gradient (``fr`` detached, textbook REINFORCE): differentiating
      ``-fr * log pi`` through ``fr`` would *lower* the reward, as ``-log pi > 0``;
    * the state ``[J ; MI]`` is not detached by default, so ``L_RL`` also reaches the fusion through the policy's
      input, as backpropagating Eq. 13 unchanged does (``detach_state=True``: only ``W_p`` learns).
    """

    def __init__(self, joint_dim: int, theta: float = 0.63, alpha: float = 0.34, beta: float = 0.63,
                 detach_state: bool = False):
        super().__init__()
        self.reward = CPRLReward(theta, alpha, beta)
        self.policy = nn.Linear(joint_dim + 1, 2)  # W_p over [J ; MI(e_u)]
        self.detach_state = detach_state

    def action_log_probs(self, joint: Tensor, mi: Tensor) -> Tensor:
        """``(B, 2)`` log-probabilities of the actions (0: mismatch, 1: match): ``log_softmax(W_p [J ; MI])``
        (computed as ``W_p[:, :D] J + W_p[:, D] MI + b``, without materialising the concatenation)."""
        if self.detach_state:
            joint, mi = joint.detach(), mi.detach()
        weight = self.policy.weight
        logits = F.linear(joint, weight[:, :-1], self.policy.bias) + mi.unsqueeze(1) * weight[:, -1]
        return F.log_softmax(logits, dim=1)

    def forward(self, joint: Tensor, reference: Tensor | None = None,
                cos: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``joint (B, D)`` and either ``reference (B, D)`` or, when the caller knows it, ``cos (B,)`` =
        ``cos_sim(joint, reference)``."""
        if (reference is None) == (cos is None):
            raise ValueError("pass exactly one of reference and cos")
        signal = self.reward(joint, reference) if cos is None else self.reward.from_cosine(cos)
        log_probs = self.action_log_probs(joint, signal["mi"])
        if self.training:
            action = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
        else:
            action = log_probs.argmax(dim=1)
        returns = action.to(log_probs.dtype) * signal["fr"].detach()  # R(1) = fr, R(0) = 0
        loss = -(returns * log_probs.gather(1, action.unsqueeze(1)).squeeze(1)).mean()
        parts = {"fr": signal["fr"].mean().detach(), "cos": signal["cos"].mean().detach(),
                 "mi": signal["mi"].mean().detach(), "match_rate": action.float().mean()}
        return loss, parts

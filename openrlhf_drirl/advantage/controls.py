"""Negative controls for ablations: estimators that keep GRPO's advantages in size and remove what the reward says.

    grpo_shuffled_control   GRPO's group-normalised rewards (centred only with --algo.advantage.no_std_norm),
                            permuted at random within each prompt group

A policy that changes as much under the control as under GRPO or GRPO-S changed for a reason other than the reward
model's preferences: the update itself, the KL term, the sampling. Not a training method.
"""

import torch

from openrlhf_drirl.advantage.grpo_s import group_normalized_rewards
from openrlhf_drirl.advantage.registry import register_advantage_estimator


@register_advantage_estimator("grpo_shuffled_control", needs_group=True)
def grpo_shuffled_control(rewards: torch.Tensor, labels: list, info: dict, args, state: dict):
    """z of OpenRLHF's group_norm (dr_grpo's with --algo.advantage.no_std_norm), each group's values in a random
    order. The order comes from --train.seed and the call count, kept in ``state`` (saved with checkpoints), so a
    resumed run draws what an uninterrupted one draws."""
    calls = state.get("shuffle_calls", 0)
    state["shuffle_calls"] = calls + 1
    generator = torch.Generator().manual_seed(args.train.seed * 1_000_003 + calls)
    order = torch.rand(rewards.shape, generator=generator).argsort(dim=-1).to(rewards.device)
    return group_normalized_rewards(rewards, not args.algo.advantage.no_std_norm).gather(-1, order), {}

"""OpenRLHF's ``RemoteExperienceMaker`` with the registered advantage estimators added.

Any estimator name not in the registry (OpenRLHF's own ones) goes to ``super()`` untouched. A registered estimator
replaces only the baseline step of ``compute_advantages_and_returns``; the steps around it are OpenRLHF's, in its order:
fp32 rewards, length penalties, rollout-order scatter, [estimator], clip + KL term (``compute_reward``),
cumulative returns with gamma = 1, no whitening (as for group_norm).
"""

import itertools
from collections.abc import Mapping
from typing import List

import torch
from openrlhf.models.utils import compute_reward
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties
from openrlhf.utils.logging_utils import init_logger

from openrlhf_drirl.advantage.registry import ADVANTAGE_ESTIMATORS

logger = init_logger(__name__)


class LazyRolloutInfo(Mapping):
    """``experience.info`` keys in rollout order, each gathered on first read (an estimator reads only a few)."""

    def __init__(self, keys, gather):
        self._keys, self._gather, self._values = keys, gather, {}

    def __getitem__(self, key):
        if key not in self._values:
            if key not in self._keys:
                raise KeyError(key)
            self._values[key] = self._gather(key)
        return self._values[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


class DRIRLExperienceMaker(RemoteExperienceMaker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Kept across steps by stateful estimators (GRPO-S's EMA); saved in OpenRLHF checkpoints by the plugin.
        self.advantage_state = {}

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: List[Experience]) -> List[Experience]:
        estimator = ADVANTAGE_ESTIMATORS.get(self.advantage_estimator)
        if estimator is None:
            return super().compute_advantages_and_returns(experiences)
        args = self.strategy.args
        n = args.rollout.n_samples_per_prompt
        if estimator.needs_group and n < 2:
            raise ValueError(
                f"--algo.advantage.estimator {estimator.name} normalises rewards within each prompt's group: set "
                f"--rollout.n_samples_per_prompt > 1 (got {n})"
            )

        for experience in experiences:
            experience.rewards = experience.rewards.to(torch.promote_types(experience.rewards.dtype, torch.float32))
        apply_length_penalties(experiences, args)

        exp_len = [len(experience.index) for experience in experiences]
        indices = torch.tensor(list(itertools.chain.from_iterable(experience.index for experience in experiences)))
        num_samples = len(indices)
        if num_samples % n or not torch.equal(indices.sort().values, torch.arange(num_samples)):
            raise ValueError(
                f"experience indices must cover 0..{num_samples - 1} in whole groups of n_samples_per_prompt={n}"
            )
        # Rewards, info and metrics stay on the device the rollout's tensors are on (CPU in OpenRLHF, any in tests).
        device = experiences[0].rewards.device
        positions, indices = indices.tolist(), indices.to(device)

        def to_rollout_order(values: torch.Tensor) -> torch.Tensor:
            values = values.to(device)
            return torch.empty_like(values).index_copy_(0, indices, values)

        raw_rewards = torch.cat([experience.rewards.reshape(-1) for experience in experiences])
        bad = (~torch.isfinite(raw_rewards)).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"rewards of samples {indices[bad][:10].tolist()} (rollout order) are NaN or inf: fix the reward "
                "function or reward model that returned them"
            )
        rewards = to_rollout_order(raw_rewards).reshape(-1, n)
        labels = [None] * num_samples
        for position, label in zip(positions, itertools.chain.from_iterable(e.labels for e in experiences)):
            labels[position] = label
        # Per-sample info tensors present in every micro-batch (the reward function's extra_logs among them),
        # gathered into rollout order when the estimator reads them.
        info_keys = [
            key
            for key in set.intersection(*(set(e.info) for e in experiences))
            if all(isinstance(e.info[key], torch.Tensor) and e.info[key].numel() == len(e.index) for e in experiences)
        ]
        info = LazyRolloutInfo(
            sorted(info_keys),
            lambda key: to_rollout_order(torch.cat([e.info[key].reshape(-1).float() for e in experiences])),
        )

        group_reward_stds = (
            rewards.std(-1, keepdim=True).repeat(1, n).reshape(-1).index_select(0, indices).split(exp_len)
        )
        for experience, group_reward_std in zip(experiences, group_reward_stds):
            experience.info["group_reward_std"] = group_reward_std

        shaped, metrics = estimator.fn(rewards, labels, info, args, self.advantage_state)
        if shaped.shape != rewards.shape:
            raise ValueError(f"estimator {estimator.name} returned shape {tuple(shaped.shape)}, not {rewards.shape}")
        # Per-sample metrics: one (metrics, samples) matrix, reordered and split once (per-metric work per micro-batch
        # would dominate). Batch statistics (scalars) repeat on every sample, so OpenRLHF's per-sample mean logs them
        # as they are; micro-batches of one length share the same read-only views of them.
        values = {
            name: torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for name, v in metrics.items()
        }
        sample_names = [name for name, v in values.items() if v.numel() != 1]
        scalar_names = [name for name, v in values.items() if v.numel() == 1]
        if sample_names:
            per_experience = (
                torch.stack([values[name] for name in sample_names]).index_select(1, indices).split(exp_len, dim=1)
            )
            for experience, rows in zip(experiences, per_experience):
                experience.info.update(zip(sample_names, rows.unbind(0)))
        if scalar_names:
            scalars, views = torch.cat([values[name] for name in scalar_names])[:, None], {}
            for experience, length in zip(experiences, exp_len):
                if length not in views:
                    views[length] = scalars.expand(-1, length).unbind(0)
                experience.info.update(zip(scalar_names, views[length]))

        if args.algo.advantage.gamma != 1.0:
            logger.warning(f"gamma is set to 1.0 for {estimator.name}")
            args.algo.advantage.gamma = 1.0
        for experience, reward in zip(experiences, shaped.reshape(-1).index_select(0, indices).split(exp_len)):
            reward = compute_reward(
                reward,
                self.kl_ctl.value,
                experience.kl,
                action_mask=experience.action_mask,
                reward_clip_range=args.reward.clip_range,
            )
            experience.returns = self.get_cumulative_returns(reward, experience.action_mask, 1.0)
            experience.advantages = experience.returns.clone()
            experience.info["return"] = reward.sum(dim=-1)
            experience.kl = None
        return experiences

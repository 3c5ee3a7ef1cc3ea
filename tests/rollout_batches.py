"""Rollout batches as OpenRLHF builds them, for the advantage-estimator tests.

Per-sample ``Experience`` objects (what ``SamplesGenerator`` returns: one sample each, rewards and the reward
function's extra_logs in ``info``) go through OpenRLHF's real ``split_rollout_samples`` with
``--train.dynamic_batch_enable`` on, whose length-balanced partitions shuffle samples across micro-batches; then the
KL tensor that ``make_experience`` would attach is added.
"""

import copy
import json
from types import SimpleNamespace

import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker


def make_args(estimator="grpo_s", n=4, kl_use_loss=True, no_std_norm=False, **drirl):
    return SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=n, max_tokens_per_gpu=64, micro_batch_size=4),
        reward=SimpleNamespace(clip_range=(-10.0, 10.0), overlong_buffer_len=None, stop_properly_penalty_coef=None),
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=estimator, gamma=1.0, lambd=0.95, no_std_norm=no_std_norm),
            kl=SimpleNamespace(use_loss=kl_use_loss),
        ),
        train=SimpleNamespace(dynamic_batch_enable=True),
        actor=SimpleNamespace(num_nodes=1, num_gpus_per_node=2),
        ds=SimpleNamespace(ring_attn_size=1, tensor_parallel_size=1),
        drirl=SimpleNamespace(**drirl),
    )


def make_maker(args, cls=DRIRLExperienceMaker, kl_coef=0.0):
    maker = cls.__new__(cls)
    maker.strategy = SimpleNamespace(args=args)
    maker.args = args
    maker.advantage_estimator = args.algo.advantage.estimator
    maker.kl_ctl = SimpleNamespace(value=kl_coef)
    maker.tokenizer = SimpleNamespace(pad_token_id=0)
    if cls is DRIRLExperienceMaker:
        maker.advantage_state = {}
    return maker


def make_rollout(rewards, labels, info=None, seed=0, max_response=6):
    """One Experience per sample, in rollout order; ``info`` maps extra_logs keys to per-sample lists."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for i, (reward, label) in enumerate(zip(rewards, labels)):
        response_length = int(torch.randint(1, max_response + 1, (1,), generator=generator))
        prompt_length = 3
        sequences = torch.randint(1, 50, (1, prompt_length + response_length), generator=generator)
        sample_info = {"reward": torch.tensor([float(reward)])}
        for key, values in (info or {}).items():
            sample_info[key] = torch.tensor([float(values[i])])
        samples.append(
            Experience(
                sequences=sequences,
                attention_mask=torch.ones_like(sequences),
                action_mask=torch.ones(1, response_length, dtype=torch.bool),
                rewards=torch.tensor([float(reward)]),
                response_length=torch.tensor([float(response_length)]),
                total_length=torch.tensor([float(prompt_length + response_length)]),
                prompts=[f"prompt {i}"],
                labels=[label],
                info=sample_info,
            )
        )
    return samples


def micro_batches(maker, rollout, kl_seed=1, kl_scale=0.0):
    """OpenRLHF's split into (shuffled) micro-batches, then a KL tensor per micro-batch as make_experience adds."""
    batches = maker.split_rollout_samples(copy.deepcopy(rollout))
    generator = torch.Generator().manual_seed(kl_seed)
    for batch in batches:
        batch.kl = kl_scale * torch.rand(batch.action_mask.shape, generator=generator) * batch.action_mask
    return batches


def label(category, demonstration="Harmful; refuse. #### I can't help with that.", as_string=False):
    value = {"category": category, "demonstration": demonstration}
    return json.dumps(value) if as_string else value


def by_rollout_position(experiences, name):
    """Per-sample rows of a field (advantages, returns, or an info key), ordered by rollout position."""
    rows = {}
    for e in experiences:
        values = e.info[name] if name in e.info else getattr(e, name)
        for row, position in enumerate(e.index):
            rows[position] = values[row]
    return [rows[i] for i in range(len(rows))]


def mark_worker_setup():
    """A user's own Ray worker_process_setup_hook (the launcher chains it after the plugin's)."""
    import os

    os.environ["MY_WORKER_SETUP_RAN"] = "1"


def mark_worker_setup():
    """A user's own Ray worker_process_setup_hook (the launcher chains it after the plugin's)."""
    import os

    os.environ["MY_WORKER_SETUP_RAN"] = "1"


__all__ = ["RemoteExperienceMaker", "DRIRLExperienceMaker"]

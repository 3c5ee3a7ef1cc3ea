"""GRPO-S on any device: the registry call and DRIRLExperienceMaker keep every tensor on the rollout's device.

Parametrized over the devices present (CPU always, CUDA when there is one); each device's run must equal the CPU
run, EMA state included.
"""

import copy

import pytest
import torch
from rollout_batches import label, make_args, make_maker, make_rollout, micro_batches

from openrlhf_drirl.advantage.registry import get_advantage_estimator
from openrlhf_drirl.contract import DEFAULT_CATEGORIES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N = 4


def rollout(seed):
    generator = torch.Generator().manual_seed(seed)
    total = 12 * N
    labels = [label(DEFAULT_CATEGORIES[(i // N) % 3], as_string=i % 3 == 0) for i in range(total)]
    info = {
        "drirl_similarity": (torch.rand(total, generator=generator) * 2 - 1).tolist(),
        "drirl_reward_gap": torch.randn(total, generator=generator).tolist(),
    }
    return make_rollout(torch.randn(total, generator=generator).tolist(), labels, info, seed=seed)


def run_two_steps(device):
    maker = make_maker(make_args("grpo_s", N, reference="ema", alpha_clip=(0.1, 10.0)), kl_coef=0.05)
    results = []
    for seed in (0, 1):  # the second step reads the EMA state the first one left
        batches = [b.to_device(torch.device(device)) for b in micro_batches(maker, rollout(seed), kl_scale=1.0)]
        results.append(maker.compute_advantages_and_returns(batches))
    return maker, results


@pytest.mark.parametrize("device", DEVICES)
def test_experience_maker_keeps_the_rollout_device(device):
    _, reference = run_two_steps("cpu")
    maker, results = run_two_steps(device)
    assert maker.advantage_state and maker.advantage_state["ema_mean_reward_gap"]
    for experiences, expected in zip(results, reference):
        for experience, cpu in zip(experiences, expected):
            for name in ("advantages", "returns"):
                value = getattr(experience, name)
                assert value.device.type == torch.device(device).type, name
                torch.testing.assert_close(value.cpu(), getattr(cpu, name), rtol=1e-5, atol=1e-6)
            drirl = [key for key in experience.info if key.startswith("drirl/")]
            assert len(drirl) > 10
            for key in drirl + ["group_reward_std", "return"]:
                assert experience.info[key].device.type == torch.device(device).type, key
                torch.testing.assert_close(experience.info[key].cpu(), cpu.info[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_registry_call_on_device(device):
    generator = torch.Generator().manual_seed(2)
    rewards = torch.randn(6, N, generator=generator)
    labels = [label(DEFAULT_CATEGORIES[(i // N) % 2]) for i in range(6 * N)]
    info = {"drirl_similarity": torch.rand(6 * N, generator=generator), "drirl_reward_gap": torch.randn(6 * N)}
    estimator = get_advantage_estimator("grpo_s")
    args = make_args("grpo_s", N, reference="ema")
    cpu_state, state = {}, {}
    expected, expected_metrics = estimator.fn(rewards, labels, info, args, cpu_state)
    on_device = {key: value.to(device) for key, value in info.items()}
    shaped, metrics = estimator.fn(rewards.to(device), labels, copy.copy(on_device), args, state)
    assert shaped.device.type == torch.device(device).type and shaped.dtype == rewards.dtype
    torch.testing.assert_close(shaped.cpu(), expected, rtol=1e-6, atol=1e-7)
    assert state.keys() == cpu_state.keys() == {"ema_mean_dissimilarity", "ema_mean_reward_gap"}
    for name, running in state.items():
        assert running == pytest.approx(cpu_state[name])
    for key, value in metrics.items():
        assert value.device.type == torch.device(device).type, key
        torch.testing.assert_close(value.cpu(), expected_metrics[key])

"""Run by upstream/check.sh against the patched OpenRLHF tree (OPENRLHF_TREE, first on PYTHONPATH).

1. Oracle, the plugin's patching off (``register()`` not called): OpenRLHF's own ``RemoteExperienceMaker`` with the
   series' ``grpo_s`` gives the shaped rewards of this project's GRPO-S (``DRIRLExperienceMaker``) to 1e-6, on the
   same shuffled micro-batches with a KL term and reward clipping.
2. The plugin's registry path: ``register()`` finds OpenRLHF's registry, puts GRPO-S into it and leaves OpenRLHF's
   experience maker in place, which then computes the plugin's GRPO-S.
"""

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from openrlhf.trainer.ppo_utils import advantage_estimators
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

from openrlhf_drirl import plugin
from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker
from openrlhf_drirl.advantage.grpo_s import grpo_s_rewards
from openrlhf_drirl.contract import DEFAULT_CATEGORIES, REWARD_GAP_KEY, SIMILARITY_KEY

CATEGORIES = DEFAULT_CATEGORIES[:3]
N, PROMPTS = 4, 12
METRICS = {"grpo_s_alpha": "drirl/alpha", "grpo_s_alpha_data": "drirl/alpha_D", "grpo_s_alpha_model": "drirl/alpha_M"}


def test_openrlhf_is_the_patched_tree():
    tree = Path(os.environ["OPENRLHF_TREE"]).resolve()
    assert Path(advantage_estimators.__file__).resolve().is_relative_to(tree)
    assert plugin.openrlhf_estimator_registry() is advantage_estimators


def rollout(seed):
    generator = torch.Generator().manual_seed(seed)
    total = N * PROMPTS
    rewards = (3 * torch.randn(total, generator=generator)).tolist()
    similarity = (torch.rand(total, generator=generator) * 2 - 1).tolist()
    gap = torch.randn(total, generator=generator)
    gap[::7] *= 20  # outliers for the reward-gap filter
    categories = [CATEGORIES[(i // N) % len(CATEGORIES)] for i in range(total)]
    return rewards, categories, similarity, gap.tolist()


def shaped(maker, rewards, labels, info):
    experiences = maker.compute_advantages_and_returns(
        micro_batches(maker, make_rollout(rewards, labels, info), kl_scale=1.0)
    )
    return experiences, {
        name: torch.stack(by_rollout_position(experiences, name)) for name in ("advantages", "returns")
    }


@pytest.mark.parametrize("terms", ["both", "data", "model"])
@pytest.mark.parametrize("outlier_k,seed", [(1.5, 0), (0.5, 1)])
def test_openrlhf_grpo_s_matches_the_plugin(terms, outlier_k, seed):
    assert not hasattr(sys.modules.get(plugin.PPO_TRAINER_MODULE), "_drirl_installed")  # patching off
    rewards, categories, similarity, gap = rollout(seed)
    # OpenRLHF's grpo_s: the label is the category, extra_logs keys similarity / reward_gap, --algo.advantage.grpo_s.*
    args = make_args("grpo_s", N)
    args.algo.advantage.grpo_s = SimpleNamespace(terms=terms, outlier_k=outlier_k)
    openrlhf_maker = make_maker(args, cls=RemoteExperienceMaker, kl_coef=0.05)
    info = {"similarity": similarity, "reward_gap": gap}
    upstream, upstream_values = shaped(openrlhf_maker, rewards, categories, info)
    # The plugin's: a JSON label with the category, drirl_* keys, --drirl.*
    plugin_maker = make_maker(make_args("grpo_s", N, hardness_terms=terms, outlier_k=outlier_k), kl_coef=0.05)
    info = {SIMILARITY_KEY: similarity, REWARD_GAP_KEY: gap}
    ours, our_values = shaped(plugin_maker, rewards, [label(c) for c in categories], info)

    for name in ("advantages", "returns"):
        torch.testing.assert_close(upstream_values[name], our_values[name], atol=1e-6, rtol=0)
    assert (upstream_values["advantages"].abs() > 1e-3).any()  # not all zero
    for upstream_name, our_name in METRICS.items() if terms == "both" else [("grpo_s_alpha", "drirl/alpha")]:
        torch.testing.assert_close(
            torch.stack(by_rollout_position(upstream, upstream_name)),
            torch.stack(by_rollout_position(ours, our_name)),
            atol=1e-6,
            rtol=0,
        )
    if terms != "data":
        assert float(upstream[0].info["grpo_s_reward_gap_outlier_frac"][0]) == pytest.approx(
            float(ours[0].info["drirl/reward_gap_outlier_frac"][0]), abs=1e-6
        )


def test_openrlhf_grpo_s_matches_the_plugin_when_the_filter_would_keep_no_gap():
    # Gaps +-1 in every category lie exactly 1 std from their mean: outlier_k 0.5 keeps none, both then keep all.
    rewards, categories, similarity, _ = rollout(3)
    gap = [(-1.0) ** i for i in range(len(rewards))]
    args = make_args("grpo_s", N)
    args.algo.advantage.grpo_s = SimpleNamespace(terms="both", outlier_k=0.5)
    upstream, upstream_values = shaped(
        make_maker(args, cls=RemoteExperienceMaker), rewards, categories, {"similarity": similarity, "reward_gap": gap}
    )
    ours, our_values = shaped(
        make_maker(make_args("grpo_s", N, outlier_k=0.5)),
        rewards,
        [label(c) for c in categories],
        {SIMILARITY_KEY: similarity, REWARD_GAP_KEY: gap},
    )
    torch.testing.assert_close(upstream_values["advantages"], our_values["advantages"], atol=1e-6, rtol=0)
    assert float(upstream[0].info["grpo_s_reward_gap_outlier_frac"][0]) == 0.0


@pytest.fixture
def openrlhf_registry():
    saved = dict(advantage_estimators.ADVANTAGE_ESTIMATORS)
    yield advantage_estimators.ADVANTAGE_ESTIMATORS
    advantage_estimators.ADVANTAGE_ESTIMATORS.clear()
    advantage_estimators.ADVANTAGE_ESTIMATORS.update(saved)


def test_plugin_registers_into_the_registry_and_replaces_nothing(openrlhf_registry):
    import openrlhf.trainer.ppo_trainer as ppo_trainer

    plugin.register()
    plugin.register()  # idempotent
    assert openrlhf_registry["grpo_s"].fn is grpo_s_rewards and openrlhf_registry["grpo_s"].needs_group
    assert ppo_trainer.RemoteExperienceMaker is RemoteExperienceMaker  # OpenRLHF's own maker stays
    assert ppo_trainer._drirl_installed  # the checkpoint hooks for the estimator state

    rewards, categories, similarity, gap = rollout(2)
    labels, info = [label(c) for c in categories], {SIMILARITY_KEY: similarity, REWARD_GAP_KEY: gap}
    openrlhf_maker = make_maker(make_args("grpo_s", N, reference="ema"), cls=RemoteExperienceMaker, kl_coef=0.05)
    _, got = shaped(openrlhf_maker, rewards, labels, info)
    plugin_maker = make_maker(make_args("grpo_s", N, reference="ema"), cls=DRIRLExperienceMaker, kl_coef=0.05)
    _, expected = shaped(plugin_maker, rewards, labels, info)
    for name in ("advantages", "returns"):
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)
    assert openrlhf_maker.advantage_state == plugin_maker.advantage_state != {}  # the EMA, on OpenRLHF's maker

"""grpo_shuffled_control, the ablation's negative control, through OpenRLHF's experience maker: each group keeps
group_norm's values (dr_grpo's with --algo.advantage.no_std_norm) in another order, the same seed and step give the
same order, and the order changes with both."""

import pytest
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

N, GROUPS = 8, 3
REWARDS = [float(i * 7 % 11) for i in range(N * GROUPS)]


def advantages(estimator, maker):
    batches = micro_batches(maker, make_rollout(REWARDS, [label("insult")] * len(REWARDS), {}))
    return [float(row[0]) for row in by_rollout_position(maker.compute_advantages_and_returns(batches), "advantages")]


def control_maker(seed, no_std_norm=False):
    maker = make_maker(make_args("grpo_shuffled_control", N, no_std_norm=no_std_norm))
    maker.args.train.seed = seed
    return maker


@pytest.mark.parametrize("no_std_norm,oracle", [(False, "group_norm"), (True, "dr_grpo")])
def test_each_group_keeps_the_openrlhf_estimators_values_in_another_order(no_std_norm, oracle):
    reference = advantages(
        oracle, make_maker(make_args(oracle, N, no_std_norm=no_std_norm), cls=RemoteExperienceMaker)
    )
    shuffled = advantages("grpo_shuffled_control", control_maker(seed=1, no_std_norm=no_std_norm))
    for g in range(GROUPS):
        group = slice(g * N, (g + 1) * N)
        assert sorted(shuffled[group]) == pytest.approx(sorted(reference[group]), abs=1e-6)
    assert shuffled != pytest.approx(reference, abs=1e-6)


def test_the_order_depends_on_the_seed_and_the_step_only():
    first, again = control_maker(seed=1), control_maker(seed=1)
    steps = [advantages("grpo_shuffled_control", first) for _ in range(2)]
    assert steps[0] != pytest.approx(steps[1], abs=1e-6)  # a new order each step
    assert [advantages("grpo_shuffled_control", again) for _ in range(2)] == steps  # same seed: same orders
    assert advantages("grpo_shuffled_control", control_maker(seed=2)) != pytest.approx(steps[0], abs=1e-6)
    assert first.advantage_state == {"shuffle_calls": 2}  # saved with OpenRLHF checkpoints: a resume continues

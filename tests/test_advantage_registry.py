"""The estimator registry is general: a second estimator registers by decorator and runs through OpenRLHF's code."""

import pytest
import torch
from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

from openrlhf_drirl.advantage import ADVANTAGE_ESTIMATORS, get_advantage_estimator, register_advantage_estimator


@pytest.fixture
def mean_absolute_deviation_estimator():
    seen = {}

    # DGPO's (MathForge) mean-absolute-deviation advantage: A_i = n (r_i - mean) / (sum_j |r_j - mean| + 1e-4),
    # scaled per category label.
    @register_advantage_estimator("test_group_mad")
    def group_mad(rewards, labels, info, args, state):
        seen.update(labels=list(labels), info_keys=sorted(info), calls=state.get("calls", 0) + 1)
        state["calls"] = seen["calls"]
        centered = rewards - rewards.mean(-1, keepdim=True)
        shaped = rewards.shape[1] * centered / (centered.abs().sum(-1, keepdim=True) + 1e-4)
        weight = torch.tensor([2.0 if lab["category"] == "insult" else 1.0 for lab in labels]).view_as(rewards)
        return shaped * weight, {"test/weight": weight.reshape(-1), "test/batch_scalar": 3.0}

    yield seen
    ADVANTAGE_ESTIMATORS.pop("test_group_mad")


def test_second_estimator_runs_with_labels_and_info(mean_absolute_deviation_estimator):
    seen = mean_absolute_deviation_estimator
    rewards = [1.0, 0.0, 3.0, 5.0, 2.0, 2.0, 0.0, 4.0]
    labels = [label("insult")] * 4 + [label("physical_harm")] * 4
    maker = make_maker(make_args("test_group_mad", n=4))
    batches = micro_batches(maker, make_rollout(rewards, labels, {"my_extra_log": list(range(8))}))
    experiences = maker.compute_advantages_and_returns(batches)

    assert [lab["category"] for lab in seen["labels"]] == ["insult"] * 4 + ["physical_harm"] * 4  # rollout order
    assert "my_extra_log" in seen["info_keys"] and "reward" in seen["info_keys"]
    assert maker.advantage_state == {"calls": 1}
    expected = []
    for g, weight in ((0, 2.0), (4, 1.0)):
        group = rewards[g : g + 4]
        mean = sum(group) / 4
        mad = sum(abs(r - mean) for r in group)
        expected += [weight * 4 * (r - mean) / (mad + 1e-4) for r in group]
    got = [float(row[0]) for row in by_rollout_position(experiences, "advantages")]
    assert got == pytest.approx(expected, abs=1e-5)
    assert [float(w) for w in by_rollout_position(experiences, "test/weight")] == [2.0] * 4 + [1.0] * 4
    assert all(float(v) == 3.0 for v in by_rollout_position(experiences, "test/batch_scalar"))


def test_registry_refuses_duplicate_and_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_advantage_estimator("grpo_s")(lambda *a: None)
    with pytest.raises(ValueError, match="unknown advantage estimator 'nope'.*grpo_s.*--drirl.estimator_modules"):
        get_advantage_estimator("nope")

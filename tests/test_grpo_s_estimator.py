"""GRPO-S through OpenRLHF's real RemoteExperienceMaker.compute_advantages_and_returns on real Experience batches."""

import copy
import math
import random

import pytest
import torch
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker
from openrlhf_drirl.cli.train_ppo_ray import ESTIMATOR_FLAG, openrlhf_parser
from openrlhf_drirl.contract import DEFAULT_CATEGORIES as DEFAULT
from openrlhf_drirl.contract import LabelError

# OpenRLHF's own estimators, read from its parser (no copy of the list here).
OPENRLHF_ESTIMATORS = openrlhf_parser()._option_string_actions[ESTIMATOR_FLAG].choices


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def group_norm_reference(rewards, n):
    """z = (r - mean) / (std + 1e-9) per group, unbiased std as OpenRLHF's torch.std."""
    z = []
    for g in range(0, len(rewards), n):
        group = rewards[g : g + n]
        mean = sum(group) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1))
        z += [(r - mean) / (std + 1e-9) for r in group]
    return z


def run(estimator, rewards, labels, info, n, kl_coef=0.0, kl_scale=0.0, cls=DRIRLExperienceMaker, **drirl):
    maker = make_maker(make_args(estimator, n, **drirl), cls=cls, kl_coef=kl_coef)
    batches = micro_batches(maker, make_rollout(rewards, labels, info), kl_scale=kl_scale)
    return maker, maker.compute_advantages_and_returns(batches)


def last_token_advantage(experiences):
    """For gamma = 1 and KL = 0 the advantage at every action token is the shaped scalar reward."""
    return [float(row[0]) for row in by_rollout_position(experiences, "advantages")]


def test_micro_batches_are_shuffled_across_groups():
    maker = make_maker(make_args(n=4))
    rewards = list(range(16))
    batches = micro_batches(maker, make_rollout(rewards, [label("insult")] * 16))
    orders = [b.index for b in batches]
    assert len(batches) > 1 and any(order != sorted(order) or order[0] % 4 for order in orders)


# At α = 1 GRPO-S is OpenRLHF's group_norm, and with --algo.advantage.no_std_norm its dr_grpo (no division by std).
@pytest.mark.parametrize("no_std_norm,oracle", [(False, "group_norm"), (True, "dr_grpo")])
def test_alpha_one_equals_openrlhf_estimator(no_std_norm, oracle):
    n, rewards = 4, [0.3, -1.2, 2.0, 0.7, 5.0, 5.5, 4.0, 3.0, -0.1, 0.0, 0.2, 0.9]
    labels = [label("insult")] * 8 + [label("physical_harm", as_string=True)] * 4
    info = {"drirl_similarity": [0.4] * 12, "drirl_reward_gap": [-0.5] * 8 + [1.0] * 4}
    _, grpo_s = run("grpo_s", rewards, labels, info, n, kl_coef=0.05, kl_scale=1.0, no_std_norm=no_std_norm)
    _, expected = run(
        oracle,
        rewards,
        labels,
        info,
        n,
        kl_coef=0.05,
        kl_scale=1.0,
        cls=RemoteExperienceMaker,
        no_std_norm=no_std_norm,
    )
    for name in ("advantages", "returns"):
        for a, b in zip(by_rollout_position(grpo_s, name), by_rollout_position(expected, name)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert all(abs(float(a) - 1.0) < 1e-6 for a in by_rollout_position(grpo_s, "drirl/alpha"))


def test_alpha_d_hand_computed():
    n, rewards = 2, [1.0, 0.0, 0.0, 1.0]
    similarity = [0.9, 0.5, 0.7, 0.1]
    info = {"drirl_similarity": similarity, "drirl_reward_gap": [0.0] * 4}
    _, experiences = run("grpo_s", rewards, [label("insult")] * 4, info, n)
    d = [1 - w for w in similarity]
    d_mean = sum(d) / 4
    alpha_d = [sigmoid(x) / sigmoid(d_mean) for x in d]
    expected = [a * z for a, z in zip(alpha_d, group_norm_reference(rewards, n))]
    assert last_token_advantage(experiences) == pytest.approx(expected, abs=1e-6)
    assert [float(x) for x in by_rollout_position(experiences, "drirl/alpha_D")] == pytest.approx(alpha_d, abs=1e-6)


def test_alpha_m_outlier_filter_hand_computed():
    n, rewards = 2, [1.0, 0.0, 0.5, 2.0]
    gaps = [0.0, 0.0, 0.0, 10.0]
    info = {"drirl_similarity": [0.5] * 4, "drirl_reward_gap": gaps}
    _, experiences = run("grpo_s", rewards, [label("mental_health")] * 4, info, n)
    m = 2.5
    s = math.sqrt(sum((g - m) ** 2 for g in gaps) / 4)  # population std, 4.33
    kept = [g for g in gaps if (g - m) ** 2 <= (1.5 * s) ** 2]
    assert kept == [0.0, 0.0, 0.0]  # 10 is 1.73 std from the mean: filtered
    alpha_m = sigmoid(sum(kept) / len(kept)) / sigmoid(m)
    expected = [alpha_m * z for z in group_norm_reference(rewards, n)]
    assert last_token_advantage(experiences) == pytest.approx(expected, abs=1e-6)
    assert float(experiences[0].info["drirl/reward_gap_outlier_frac"][0]) == pytest.approx(0.25)
    # With a wider filter, the outlier stays and alpha_M = σ(m)/σ(m) = 1.
    _, wide = run("grpo_s", rewards, [label("mental_health")] * 4, info, n, outlier_k=2.0)
    assert last_token_advantage(wide) == pytest.approx(group_norm_reference(rewards, n), abs=1e-6)


def test_mixed_categories_use_their_own_means():
    n = 2
    rewards = [1.0, 0.0, 0.0, 1.0, 2.0, 1.0, 3.0, 0.0]
    labels = (
        [label("insult")] * 2 + [label("physical_harm")] * 2 + [label("insult")] * 2 + [label("physical_harm")] * 2
    )
    similarity = [0.8, 0.2, 0.5, 0.5, 0.6, 0.4, 0.9, 0.3]
    gaps = [-1.0, -2.0, 0.5, 0.7, -1.5, -1.0, 0.6, 0.4]
    _, experiences = run("grpo_s", rewards, labels, {"drirl_similarity": similarity, "drirl_reward_gap": gaps}, n)
    z = group_norm_reference(rewards, n)
    members = {"insult": [0, 1, 4, 5], "physical_harm": [2, 3, 6, 7]}
    expected = [0.0] * 8
    for c, idx in members.items():
        d_mean = sum(1 - similarity[i] for i in idx) / 4
        g = [gaps[i] for i in idx]
        m = sum(g) / 4
        s = math.sqrt(sum((x - m) ** 2 for x in g) / 4)
        kept = [x for x in g if (x - m) ** 2 <= (1.5 * s) ** 2]
        alpha_m = sigmoid(sum(kept) / len(kept)) / sigmoid(m)
        for i in idx:
            expected[i] = sigmoid(1 - similarity[i]) / sigmoid(d_mean) * alpha_m * z[i]
        assert float(experiences[0].info[f"drirl/alpha_M/{c}"][0]) == pytest.approx(alpha_m, abs=1e-6)
        reward_mean = sum(rewards[i] for i in idx) / 4
        assert float(experiences[0].info[f"drirl/reward_mean/{c}"][0]) == pytest.approx(reward_mean)
    assert last_token_advantage(experiences) == pytest.approx(expected, abs=1e-6)


def test_kl_term_is_not_scaled():
    n, rewards = 2, [1.0, 0.0, 0.0, 1.0]
    info = {"drirl_similarity": [0.9, 0.1, 0.3, 0.6], "drirl_reward_gap": [0.0, 1.0, 2.0, 0.0]}
    maker = make_maker(make_args("grpo_s", n), kl_coef=0.1)
    batches = micro_batches(maker, make_rollout(rewards, [label("insult")] * 4, info), kl_scale=1.0)
    kl = {p: batch.kl[row].clone() for batch in batches for row, p in enumerate(batch.index)}
    last_action = {
        p: int(batch.action_mask[row].nonzero().max()) for batch in batches for row, p in enumerate(batch.index)
    }
    experiences = maker.compute_advantages_and_returns(batches)
    alpha = [float(a) for a in by_rollout_position(experiences, "drirl/alpha")]
    assert max(alpha) - min(alpha) > 0.05  # the case really scales
    z = group_norm_reference(rewards, n)
    for position, returns in enumerate(by_rollout_position(experiences, "returns")):
        per_token = -0.1 * kl[position]
        per_token[last_action[position]] += alpha[position] * z[position]
        expected = per_token.flip(0).cumsum(0).flip(0)
        torch.testing.assert_close(returns, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("estimator", OPENRLHF_ESTIMATORS)
def test_builtin_estimators_are_untouched(estimator):
    n = 4
    generator = random.Random(estimator)
    rewards = [generator.uniform(-3, 3) for _ in range(16)]
    labels = [label("insult")] * 16
    info = {"drirl_similarity": [0.5] * 16, "drirl_reward_gap": [0.0] * 16}
    plain = make_maker(make_args(estimator, n), cls=RemoteExperienceMaker, kl_coef=0.05)
    plugin = make_maker(make_args(estimator, n), cls=DRIRLExperienceMaker, kl_coef=0.05)
    batches = micro_batches(plain, make_rollout(rewards, labels, info), kl_scale=1.0)
    for batch in batches:
        batch.values = torch.randn(batch.action_mask.shape, generator=torch.Generator().manual_seed(len(batch.index)))
    expected = plain.compute_advantages_and_returns(copy.deepcopy(batches))
    got = plugin.compute_advantages_and_returns(copy.deepcopy(batches))
    for e, g in zip(expected, got):
        assert torch.equal(e.advantages, g.advantages) and torch.equal(e.returns, g.returns)
        assert e.info.keys() == g.info.keys()
        assert all(torch.equal(e.info[k], g.info[k]) for k in e.info)


def test_equal_rewards_give_zero_advantages():
    info = {"drirl_similarity": [0.2, 0.9, 0.4, 0.6], "drirl_reward_gap": [1.0, -3.0, 0.0, 2.0]}
    _, experiences = run("grpo_s", [0.7] * 4, [label("insult")] * 4, info, 4)
    for e in experiences:
        assert torch.equal(e.advantages, torch.zeros_like(e.advantages))


@pytest.mark.parametrize(
    "labels,message",
    [
        ([{"demonstration": "x"}] * 4, "has no 'category'"),
        ([label("weather")] * 4, "unknown category 'weather'"),
        (["{not json"] * 4, "is not JSON"),
        ([""] * 4, "--data.label_key"),
        ([7] * 4, "must be a JSON object"),
    ],
)
def test_bad_labels_name_the_field(labels, message):
    info = {"drirl_similarity": [0.5] * 4, "drirl_reward_gap": [0.0] * 4}
    with pytest.raises(LabelError, match=message):
        run("grpo_s", [0.0, 1.0, 2.0, 3.0], labels, info, 2)


def test_missing_drirl_keys_say_which_reward_function_keys_are_needed():
    with pytest.raises(KeyError, match="drirl_similarity.*extra_logs.*drirl_reward_gap"):
        run("grpo_s", [0.0, 1.0, 2.0, 3.0], [label("insult")] * 4, {"drirl_reward_gap": [0.0] * 4}, 2)
    with pytest.raises(KeyError, match="drirl_reward_gap"):
        run("grpo_s", [0.0, 1.0, 2.0, 3.0], [label("insult")] * 4, {"drirl_similarity": [0.5] * 4}, 2)
    # Each term alone needs only its own key.
    run(
        "grpo_s",
        [0.0, 1.0, 2.0, 3.0],
        [label("insult")] * 4,
        {"drirl_similarity": [0.5] * 4},
        2,
        hardness_terms="data",
    )
    run(
        "grpo_s",
        [0.0, 1.0, 2.0, 3.0],
        [label("insult")] * 4,
        {"drirl_reward_gap": [0.5] * 4},
        2,
        hardness_terms="model",
    )


def test_one_sample_per_prompt_is_refused():
    info = {"drirl_similarity": [0.5] * 4, "drirl_reward_gap": [0.0] * 4}
    with pytest.raises(ValueError, match="n_samples_per_prompt > 1"):
        run("grpo_s", [0.0, 1.0, 2.0, 3.0], [label("insult")] * 4, info, 1)


@pytest.mark.parametrize(
    "rewards,similarity,gaps,message",
    [
        ([0.0, float("nan"), 1.0, 2.0], [0.5] * 4, [0.0] * 4, "rewards of samples \\[1\\].*NaN or inf"),
        ([0.0, 1.0, float("inf"), 2.0], [0.5] * 4, [0.0] * 4, "rewards of samples \\[2\\]"),
        ([0.0, 1.0, 1.0, 2.0], [0.5, float("nan"), 0.5, 0.5], [0.0] * 4, "drirl_similarity is NaN or inf"),
        ([0.0, 1.0, 1.0, 2.0], [0.5] * 4, [0.0, 0.0, 0.0, float("-inf")], "drirl_reward_gap is NaN or inf"),
        ([0.0, 1.0, 1.0, 2.0], [0.5, 3.0, 0.5, 0.5], [0.0] * 4, "cosine similarity in \\[-1, 1\\]"),
    ],
)
def test_non_finite_inputs_are_refused(rewards, similarity, gaps, message):
    with pytest.raises(ValueError, match=message):
        run("grpo_s", rewards, [label("insult")] * 4, {"drirl_similarity": similarity, "drirl_reward_gap": gaps}, 2)


@pytest.mark.parametrize(
    "flag,value",
    [("hardness_terms", "neither"), ("reference", "epoch"), ("ema_decay", 1.0), ("alpha_exponent", 0.0)],
)
def test_bad_options_name_the_flag(flag, value):
    with pytest.raises(ValueError, match=f"--drirl.{flag}"):
        run(
            "grpo_s",
            [0.0, 1.0],
            [label("insult")] * 2,
            {"drirl_similarity": [0.5] * 2, "drirl_reward_gap": [0] * 2},
            2,
            **{flag: value},
        )


def test_group_reference_and_clip():
    n, rewards = 2, [1.0, 0.0, 0.0, 1.0]
    similarity = [0.9, 0.5, 0.7, 0.1]
    info = {"drirl_similarity": similarity, "drirl_reward_gap": [0.0] * 4}
    _, experiences = run("grpo_s", rewards, [label("insult")] * 4, info, n, reference="group", alpha_clip=[0.95, 1.05])
    z = group_norm_reference(rewards, n)
    expected = []
    for g in (0, 2):
        d = [1 - similarity[g], 1 - similarity[g + 1]]
        expected += [min(max(sigmoid(x) / sigmoid(sum(d) / 2), 0.95), 1.05) * z[g + k] for k, x in enumerate(d)]
    assert last_token_advantage(experiences) == pytest.approx(expected, abs=1e-6)


def test_alpha_exponent_raises_the_product_before_the_clip():
    n, rewards = 2, [1.0, 0.0, 0.0, 1.0]
    similarity = [0.9, 0.5, 0.7, 0.1]
    info = {"drirl_similarity": similarity, "drirl_reward_gap": [0.0] * 4}
    _, plain = run("grpo_s", rewards, [label("insult")] * 4, info, n, reference="group")
    _, sharp = run("grpo_s", rewards, [label("insult")] * 4, info, n, reference="group", alpha_exponent=10.0)
    _, clipped = run(
        "grpo_s",
        rewards,
        [label("insult")] * 4,
        info,
        n,
        reference="group",
        alpha_exponent=10.0,
        alpha_clip=[0.5, 1.5],
    )
    z = group_norm_reference(rewards, n)
    alpha = [a / zi for a, zi in zip(last_token_advantage(plain), z)]
    assert max(abs(a - 1) for a in alpha) > 0.05  # the exponent has something to sharpen
    assert last_token_advantage(sharp) == pytest.approx([a**10 * zi for a, zi in zip(alpha, z)], abs=1e-6)
    expected = [min(max(a**10, 0.5), 1.5) * zi for a, zi in zip(alpha, z)]
    assert last_token_advantage(clipped) == pytest.approx(expected, abs=1e-6)


def test_ema_reference_updates_state_across_batches():
    n, rewards = 2, [1.0, 0.0, 0.0, 1.0]
    maker = make_maker(make_args("grpo_s", n, reference="ema", ema_decay=0.5))
    for step, (similarity, gaps) in enumerate([([0.8] * 4, [1.0] * 4), ([0.4] * 4, [3.0] * 4)]):
        batches = micro_batches(
            maker,
            make_rollout(rewards, [label("insult")] * 4, {"drirl_similarity": similarity, "drirl_reward_gap": gaps}),
        )
        experiences = maker.compute_advantages_and_returns(batches)
    # δ̄: 0.2, then 0.5·0.2 + 0.5·0.6 = 0.4; m: 1, then 2.
    assert maker.advantage_state["ema_mean_dissimilarity"]["insult"] == pytest.approx(0.4)
    assert maker.advantage_state["ema_mean_reward_gap"]["insult"] == pytest.approx(2.0)
    alpha = sigmoid(0.6) / sigmoid(0.4) * sigmoid(3.0) / sigmoid(2.0)
    z = group_norm_reference(rewards, n)
    assert last_token_advantage(experiences) == pytest.approx([alpha * x for x in z], abs=1e-6)


def test_random_batches_never_give_nan_or_inf():
    generator = random.Random(0)
    categories = ["insult", "physical_harm", "mental_health", "privacy_and_property"]
    for trial in range(150):
        n = generator.choice([2, 3, 4, 8])
        groups = generator.randint(1, 6)
        scale = generator.choice([1e-6, 1.0, 1e3])
        rewards, labels, similarity, gaps = [], [], [], []
        for _ in range(groups):
            tie = generator.random() < 0.3
            base = generator.uniform(-5, 5) * scale
            rewards += [base if tie else base + generator.gauss(0, scale) for _ in range(n)]
            labels += [label(generator.choice(categories))] * n
        similarity = [generator.choice([-1.0, 1.0, generator.uniform(-1, 1)]) for _ in rewards]
        gaps = [generator.choice([0.0, generator.gauss(0, 50.0)]) for _ in rewards]
        options = generator.choice([{}, {"reference": "group"}, {"reference": "ema"}, {"hardness_terms": "model"}])
        _, experiences = run(
            "grpo_s", rewards, labels, {"drirl_similarity": similarity, "drirl_reward_gap": gaps}, n, **options
        )
        for e in experiences:
            assert torch.isfinite(e.advantages).all() and torch.isfinite(e.returns).all(), (trial, options)
            assert all(torch.isfinite(v).all() for v in e.info.values())


@pytest.mark.parametrize("terms", ["none", "data", "model"])
def test_ablation_modes_scale_by_their_terms_and_log_all_terms(terms):
    """none is OpenRLHF's group_norm exactly (the ablation baseline); every mode logs α^D and α^M as computed."""
    n, rewards = 4, [0.3, -1.2, 2.0, 0.7, 5.0, 5.5, 4.0, 3.0]
    labels = [label("insult")] * 4 + [label("physical_harm")] * 4
    info = {
        "drirl_similarity": [0.9, 0.1, 0.5, -0.3, 0.2, 0.8, 0.4, 0.4],
        "drirl_reward_gap": [-0.5, 0.0, 0.2, 9.0, 1.0, 1.2, 0.8, 1.0],
    }
    _, both = run("grpo_s", rewards, labels, info, n)
    _, ablated = run("grpo_s", rewards, labels, info, n, hardness_terms=terms)
    _, group_norm = run("group_norm", rewards, labels, info, n, cls=RemoteExperienceMaker)
    alpha_d = [float(a) for a in by_rollout_position(both, "drirl/alpha_D")]
    alpha_m = [float(a) for a in by_rollout_position(both, "drirl/alpha_M")]
    for name in ("drirl/alpha_D", "drirl/alpha_M"):
        logged = [float(a) for a in by_rollout_position(ablated, name)]
        assert logged == pytest.approx([float(a) for a in by_rollout_position(both, name)], abs=1e-9)
    assert len(set(round(a, 6) for a in alpha_d)) > 1 and len(set(round(a, 6) for a in alpha_m)) > 1
    expected_alpha = {"none": [1.0] * 8, "data": alpha_d, "model": alpha_m}[terms]
    assert [float(a) for a in by_rollout_position(ablated, "drirl/alpha")] == pytest.approx(expected_alpha, abs=1e-6)
    z = [float(a) for a in last_token_advantage(group_norm)]
    assert last_token_advantage(ablated) == pytest.approx([a * b for a, b in zip(expected_alpha, z)], abs=1e-5)


def grpo_s_direct(rewards, categories, similarity, gap, **drirl):
    """The registered function called directly, as any caller may (no experience maker around it)."""
    from openrlhf_drirl.advantage.grpo_s import grpo_s_rewards

    n = rewards.shape[1]
    labels = [label(c) for c in categories for _ in range(n)]
    info = {"drirl_similarity": similarity, "drirl_reward_gap": gap}
    return grpo_s_rewards(rewards, labels, info, make_args("grpo_s", n=n, **drirl), {})


@pytest.mark.parametrize("reference", ["batch", "group", "ema"])
@pytest.mark.parametrize("gap_value", [-1e4, 1e4, -150.0, -95.0])
def test_extreme_reward_gaps_give_finite_advantages(reference, gap_value):
    # Gaps of -95 in one category (or -150 everywhere) made σ(mean gap) underflow to 0 in float32: α^M = 0/0.
    rewards = torch.tensor([[1.0, 0.0, 0.5, 2.0], [0.0, 3.0, 1.0, 1.0]])
    gap = torch.tensor([gap_value, gap_value * 0.5, gap_value, 0.0, gap_value, gap_value, 1.0, gap_value])
    similarity = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 0.0, 1.0])  # the ends of [-1, 1]
    shaped, metrics = grpo_s_direct(rewards, ["insult", "physical_harm"], similarity, gap, reference=reference)
    assert torch.isfinite(shaped).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in metrics.values())


def test_alpha_m_in_log_space_equals_the_formula_where_float64_can_compute_it():
    # One category, gaps with an outlier: α^M = σ(mean of kept) / σ(mean), computed here in float64 directly.
    gap = torch.tensor([-120.0, -121.0, -119.0, -300.0])
    rewards = torch.tensor([[1.0, 0.0, 0.5, 2.0]])
    shaped, metrics = grpo_s_direct(rewards, ["insult"], torch.zeros(4), gap, hardness_terms="model")
    g = gap.double()
    kept = g[(g - g.mean()) ** 2 <= (1.5 * g.std(unbiased=False)) ** 2]
    expected = torch.sigmoid(kept.mean()) / torch.sigmoid(g.mean())
    assert float(metrics["drirl/alpha_M"][0]) == pytest.approx(float(expected), rel=1e-9)


def test_grpo_s_is_finite_for_inputs_over_many_orders_of_magnitude():
    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        num_groups, n = int(torch.randint(1, 6, (1,), generator=generator)), int(
            torch.randint(2, 9, (1,), generator=generator)
        )
        scale = lambda size: 10 ** (torch.rand(size, generator=generator, dtype=torch.float64) * 36 - 6)  # noqa: E731
        sign = lambda size: torch.randint(0, 2, size, generator=generator) * 2 - 1  # noqa: E731
        rewards = (sign((num_groups, n)) * scale((num_groups, n))).float()
        gap = (sign((num_groups * n,)) * scale((num_groups * n,))).float()
        similarity = torch.rand(num_groups * n, generator=generator) * 2 - 1
        categories = [DEFAULT[int(i)] for i in torch.randint(0, 7, (num_groups,), generator=generator)]
        drirl = dict(
            reference=["batch", "group", "ema"][trial % 3], hardness_terms=["both", "data", "model"][trial % 3 - 1]
        )
        shaped, _ = grpo_s_direct(rewards, categories, similarity, gap, **drirl)
        assert torch.isfinite(shaped).all(), (trial, rewards, gap, drirl)


def test_one_sample_per_group_is_a_clear_error_when_called_directly():
    with pytest.raises(ValueError, match="n_samples_per_prompt > 1"):
        grpo_s_direct(torch.tensor([[1.0], [0.0]]), ["insult", "insult"], torch.zeros(2), torch.zeros(2))

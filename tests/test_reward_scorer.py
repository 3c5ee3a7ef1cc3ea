"""The shared scorer and the reward_func file, called through OpenRLHF's own SingleTurnAgentExecutor."""

import asyncio
import logging
import os

import pytest
import torch
from openrlhf.utils.agent import SingleTurnAgentExecutor

import openrlhf_drirl.reward.reward_func as reward_func_module
from openrlhf_drirl.reward.data import reward_text
from openrlhf_drirl.reward.scorer import MAX_CHUNK_PADDING, CategoryRewardScorer, RewardRequestError


class WordOverlap:
    """A stand-in similarity (share of response words found in the demonstration) that records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, responses, demonstrations):
        self.calls.append((list(responses), list(demonstrations)))
        return torch.tensor(
            [len(set(r.split()) & set(d.split())) / max(1, len(r.split())) for r, d in zip(responses, demonstrations)]
        )


@pytest.fixture(scope="module")
def scorer(category_rm_dir):
    return CategoryRewardScorer.from_pretrained(category_rm_dir, similarity=WordOverlap(), device="cpu")


def _request(
    scorer, prompt="Tell me how to insult my boss?", response="I can't help, it could hurt my boss.", **label
):
    label = {"category": "insult", "demonstration": "I can't help, it could hurt my boss.", **label}
    # OpenRLHF's query: the templated prompt + generated tokens decoded with special tokens (eos at the end).
    templated = scorer.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return [templated + response + scorer.tokenizer.eos_token], [templated], [label]


def test_reward_gap_and_similarity_per_sample(scorer):
    queries, prompts, labels = _request(scorer, response="That is hard; talk to my boss about it.")
    result = scorer(queries, prompts, labels)
    assert set(result) == {"rewards", "scores", "extra_logs"}
    assert set(result["extra_logs"]) == {"drirl_reward_gap", "drirl_similarity"}
    reward = float(result["rewards"][0])
    demonstration_ids = scorer.token_ids(prompts[0], labels[0]["demonstration"], "demonstration")
    demonstration_reward = float(scorer.rewards_of([demonstration_ids], [0])[0])
    assert float(result["extra_logs"]["drirl_reward_gap"][0]) == pytest.approx(reward - demonstration_reward, abs=1e-5)
    # "insult" (an even category) was trained to prefer the refusal, so the supportive answer scores below it
    assert float(result["extra_logs"]["drirl_reward_gap"][0]) < 0
    assert scorer.similarity.calls[-1] == (["That is hard; talk to my boss about it."], [labels[0]["demonstration"]])


def test_response_is_query_minus_prompt_without_eos_or_pad(scorer):
    tokenizer = scorer.tokenizer
    queries, prompts, labels = _request(scorer, response="Stay safe.")
    padded = [queries[0] + tokenizer.pad_token + tokenizer.pad_token]
    assert scorer.prepare(padded, prompts, labels)[0].response == "Stay safe."
    torch.testing.assert_close(scorer(padded, prompts, labels)["rewards"], scorer(queries, prompts, labels)["rewards"])


def test_demonstration_reward_is_cached_or_read_from_label(scorer):
    queries, prompts, labels = _request(scorer, prompt="A new prompt for the cache test?")
    calls = []
    original = scorer.rewards_of

    def counting(sequences, category_ids):
        calls.append(len(sequences))
        return original(sequences, category_ids)

    scorer.rewards_of = counting
    try:
        first = scorer(queries, prompts, labels)
        second = scorer(queries, prompts, labels)
        assert calls == [2, 1]  # the demonstration is scored once, then cached
        labels[0]["demonstration_reward"] = 5.0
        third = scorer(queries, prompts, labels)
    finally:
        del scorer.rewards_of
    torch.testing.assert_close(first["extra_logs"]["drirl_reward_gap"], second["extra_logs"]["drirl_reward_gap"])
    assert float(third["extra_logs"]["drirl_reward_gap"][0]) == pytest.approx(float(third["rewards"][0]) - 5.0)


def test_mixed_batch_matches_one_by_one(scorer):
    categories = scorer.categories
    batch = [
        _request(scorer, prompt=f"Prompt {i}?", response=f"Reply {i}.", category=categories[i % 7]) for i in range(9)
    ]
    together = scorer([b[0][0] for b in batch], [b[1][0] for b in batch], [b[2][0] for b in batch])
    for i, (q, p, l) in enumerate(batch):
        alone = scorer(q, p, l)
        assert float(alone["rewards"][0]) == pytest.approx(float(together["rewards"][i]), abs=1e-5)


def test_without_similarity_the_key_is_absent(category_rm_dir, scorer):
    plain = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=None)
    result = plain(*_request(plain))
    assert set(result["extra_logs"]) == {"drirl_reward_gap"}


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda q, p, l: (q, p, [{"category": "sensitive_topics", "demonstration": "x"}]), "labels[0]"),
        (lambda q, p, l: (q, p, [{"demonstration": "x"}]), "labels[0]"),
        (lambda q, p, l: (q, p, [{"category": "insult"}]), "labels[0].demonstration"),
        (lambda q, p, l: ([""], [""], l), "query[0]"),
        (lambda q, p, l: (q, ["not the prompt"], l), "prompts[0]"),
        (lambda q, p, l: (q + q, p, l), "prompts"),
        (lambda q, p, l: (q, p, [{**l[0], "demonstration_reward": "high"}]), "labels[0].demonstration_reward"),
    ],
)
def test_bad_requests_name_the_field(scorer, edit, field):
    with pytest.raises(RewardRequestError) as error:
        scorer.prepare(*edit(*_request(scorer)))
    assert error.value.field == field and 400 <= error.value.status < 500


def test_reward_func_file_through_openrlhf_executor(category_rm_dir, scorer, monkeypatch):
    """OpenRLHF execs the file and calls reward_func([query], [prompt], [label]) per sample in threads."""
    monkeypatch.setenv("DRIRL_RM_PATH", category_rm_dir)
    monkeypatch.setenv("DRIRL_RM_DEVICE", "cpu")
    monkeypatch.setenv("DRIRL_HARDNESS_BACKEND", "none")
    executor = SingleTurnAgentExecutor(remote_rm_url=os.path.abspath(reward_func_module.__file__))
    requests = [_request(scorer, prompt=f"Prompt {i}?", response=f"Answer {i}.") for i in range(4)]

    async def fetch_all():
        return await asyncio.gather(*(executor._fetch_rewards_via_func(*r) for r in requests))

    results = asyncio.run(fetch_all())
    for request, result in zip(requests, results):
        info = result[0]
        assert info["rewards"].shape == (1,) and set(info["extra_logs"]) == {"drirl_reward_gap"}
        expected = float(scorer(*request)["rewards"][0])
        assert float(info["rewards"][0]) == pytest.approx(expected, abs=1e-5)


def test_reward_func_without_model_path_says_what_to_set(monkeypatch):
    import importlib.util

    monkeypatch.delenv("DRIRL_RM_PATH", raising=False)
    spec = importlib.util.spec_from_file_location("reward_func_fresh", reward_func_module.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(RuntimeError, match="DRIRL_RM_PATH"):
        module.reward_func(["q"], ["q"], [{}])


@pytest.mark.parametrize(
    "label, field",
    [
        ({"demonstration_reward": 10**400}, "labels[0].demonstration_reward"),  # overflows float64
        ({"demonstration_reward": 1e39}, "labels[0].demonstration_reward"),  # finite in float64, inf in float32
        ({"demonstration_reward": float("nan")}, "labels[0].demonstration_reward"),
        ({"demonstration_embeddings": "abc"}, "labels[0].demonstration_embeddings"),
        ({"demonstration_embeddings": [[1.0], [2.0, 3.0]]}, "labels[0].demonstration_embeddings"),
        ({"demonstration_embeddings": [[3e38, 1e39]]}, "labels[0].demonstration_embeddings"),
        ({"demonstration": "no \ud800"}, "labels[0].demonstration"),
    ],
)
def test_bad_label_values_name_the_field(scorer, label, field):
    queries, prompts, labels = _request(scorer, **label)
    with pytest.raises(RewardRequestError) as error:
        scorer.prepare(queries, prompts, labels)
    assert error.value.field == field and error.value.status == 422


def test_surrogate_and_nested_label_string_name_the_field(scorer):
    queries, prompts, labels = _request(scorer, response="fine \ud800")
    with pytest.raises(RewardRequestError, match=r"^query\[0\]: holds a lone UTF-16 surrogate"):
        scorer.prepare(queries, prompts, labels)
    queries, prompts, _ = _request(scorer)
    with pytest.raises(RewardRequestError, match=r"^labels\[0\]: is nested too deeply"):
        scorer.prepare(queries, prompts, ["[" * 5000 + "]" * 5000])


@pytest.mark.parametrize("given_first", [False, True])
def test_same_new_demonstration_with_and_without_its_reward(scorer, given_first):
    """Two samples share a new (prompt, demonstration), one carries demonstration_reward: both get their gap."""
    queries, prompts, labels = _request(scorer, prompt=f"A prompt never scored before ({given_first})?")
    given = {**labels[0], "demonstration_reward": 5.0}
    both = [given, labels[0]] if given_first else [labels[0], given]
    result = scorer(queries * 2, prompts * 2, both)
    ids = scorer.token_ids(prompts[0], labels[0]["demonstration"], "demonstration")
    computed = float(scorer.rewards_of([ids], [0])[0])
    expected = [5.0 if "demonstration_reward" in label else computed for label in both]
    torch.testing.assert_close(
        result["extra_logs"]["drirl_reward_gap"], result["rewards"] - torch.tensor(expected), atol=1e-5, rtol=0
    )


def test_demonstration_reward_cache_is_a_bounded_lru(scorer):
    small = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=None, cache_size=2)
    requests = {name: _request(small, prompt=f"LRU prompt {name}?") for name in "ABC"}
    calls = []
    original = small.rewards_of
    small.rewards_of = lambda sequences, category_ids: calls.append(len(sequences)) or original(
        sequences, category_ids
    )
    for name in "ABAC":  # A is used again before C arrives, so C evicts B, not A
        small(*requests[name])
    small(*requests["A"])
    assert len(small.demonstration_rewards) == 2 and calls == [2, 2, 1, 2, 1]


def test_over_long_prompt_is_cut_from_the_left_so_the_response_counts(scorer):
    short = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=None, max_len=24)
    long_prompt = "Tell me how to insult my boss, again and again? " * 10
    answers = ["I can't help, it could hurt my boss.", "That is hard; talk to my boss about it."]
    requests = [_request(short, prompt=long_prompt, response=answer) for answer in answers]
    rewards = [float(short(*request)["rewards"][0]) for request in requests]
    assert rewards[0] != pytest.approx(rewards[1], abs=1e-4)  # right truncation used to score only the prompt
    for (queries, prompts, _), answer, reward in zip(requests, answers, rewards):
        text = reward_text(prompts[0], answer, short.tokenizer.eos_token)
        ids = short.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 24 and ids[-1] == short.tokenizer.eos_token_id
        with torch.no_grad():
            expected = short.model(torch.tensor([ids[-24:]]), torch.ones(1, 24, dtype=torch.long), torch.tensor([0]))
        assert reward == pytest.approx(float(expected[0]), abs=1e-5)


def test_response_or_demonstration_longer_than_max_len_is_rejected(scorer):
    short = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=None, max_len=24)
    with pytest.raises(RewardRequestError, match=r"^query\[0\]: is \d+ tokens long without the prompt") as error:
        short.prepare(*_request(short, response="I can't help, it could hurt my boss. " * 5))
    assert error.value.status == 422 and "--data.max_len 24" in str(error.value)
    with pytest.raises(RewardRequestError) as error:
        short.prepare(*_request(short, demonstration="I can't help, it could hurt my boss. " * 5))
    assert error.value.field == "labels[0].demonstration"


def test_max_len_above_the_model_positions_is_capped_loudly(scorer, caplog):
    positions = scorer.model.config.max_position_embeddings
    with caplog.at_level(logging.WARNING):
        capped = CategoryRewardScorer(scorer.model, scorer.tokenizer, max_len=positions * 2)
    assert capped.max_len == positions
    assert f"--data.max_len {positions * 2} is above the reward model's {positions} positions" in caplog.text


def test_rows_are_scored_sorted_by_length_and_returned_in_the_callers_order(scorer):
    """Chunks of length-sorted rows pad little; the rewards are those of unpadded scoring, in the caller's order."""
    batched = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=None, batch_size=4)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 40, (13,), generator=generator).tolist() + [100, 3]  # a long row and a short one
    sequences = [torch.randint(5, 200, (length,), generator=generator).tolist() for length in lengths]
    category_ids = [i % len(scorer.categories) for i in range(len(sequences))]
    rewards = batched.rewards_of(sequences, category_ids)
    one_by_one = torch.cat([scorer.rewards_of([seq], [c]) for seq, c in zip(sequences, category_ids)])
    torch.testing.assert_close(rewards, one_by_one, rtol=1e-4, atol=1e-5)
    # In arrival order, 4-row chunks would pad each row to its chunk's longest one.
    chunks = [lengths[i : i + 4] for i in range(0, len(lengths), 4)]
    arrival_padding = sum(max(chunk) * len(chunk) - sum(chunk) for chunk in chunks)
    assert batched.computed_tokens - batched.padding_tokens == sum(lengths)
    assert batched.padding_tokens <= MAX_CHUNK_PADDING * batched.computed_tokens
    assert batched.padding_tokens < arrival_padding / 5


def test_two_phase_similarity_gives_what_a_direct_call_gives(scorer):
    """SubSentenceSimilarity's CPU part runs in the scorer's thread during the reward forward, its encoder after:
    the same W as calling it directly, cold and warm (demonstrations cached)."""
    import open_clip

    from openrlhf_drirl.hardness import build_similarity

    open_clip.add_model_config(os.path.join(os.path.dirname(__file__), "assets", "drirl-tiny-clip.json"))
    torch.manual_seed(0)
    cfg = type("Cfg", (), {"model_name": "drirl-tiny-clip", "pretrained": "none", "device": "cpu"})
    similarity = build_similarity(cfg)
    overlapped = CategoryRewardScorer(scorer.model, scorer.tokenizer, similarity=similarity)
    responses = ["I can't help, it could hurt my boss.", "Sure. Here is how, step one. Step two!", "No; talk to HR."]
    requests = [_request(overlapped, prompt=f"Two-phase prompt {i}?", response=r) for i, r in enumerate(responses)]
    queries, prompts, labels = (sum((list(r[k]) for r in requests), []) for k in range(3))
    for _ in range(2):
        result = overlapped(queries, prompts, labels)
        direct = similarity(responses, [label["demonstration"] for label in labels])
        torch.testing.assert_close(result["extra_logs"]["drirl_similarity"], direct)
    assert similarity.cache_hits > 0

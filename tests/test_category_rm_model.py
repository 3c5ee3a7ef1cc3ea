"""The two layouts of the category reward model, save/load, and export to a plain OpenRLHF reward checkpoint."""

import json
import os

import pytest
import torch
from openrlhf.models import get_llm_for_sequence_regression
from transformers import AutoTokenizer

from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.reward.data import left_pad, reward_text
from openrlhf_drirl.reward.model import (
    PerCategoryRewardModels,
    export_category,
    get_category_reward_model,
    load_category_reward_model,
    load_openrlhf_reward_model,
    refill_reward_buffers,
)


def _mixed_batch(model_dir, n=14):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        reward_text(
            f"Question {i} about {'a' * (i % 5)} harm?", f"Answer {i}: I can't help{'.' * i}", tokenizer.eos_token
        )
        for i in range(n)
    ]
    input_ids, attention_mask = left_pad(
        tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id
    )
    category_ids = torch.tensor([i % len(DEFAULT_CATEGORIES) for i in range(n)])
    return tokenizer, input_ids, attention_mask, category_ids


@pytest.fixture(scope="module")
def bf16_exact_model_dir(category_rm_dir, tmp_path_factory):
    """The trained model with every weight rounded to bf16 and saved in fp32: OpenRLHF's loader only loads bf16/fp16,
    so with these weights its model and ours hold identical parameters and can be compared in fp32."""
    model = load_category_reward_model(category_rm_dir, param_dtype="fp32")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
    model.config.drirl_mean = [0.1 * i for i in range(7)]
    model.config.drirl_std = [1.0 + 0.5 * i for i in range(7)]
    path = str(tmp_path_factory.mktemp("bf16_exact"))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(category_rm_dir).save_pretrained(path)
    return path


def test_save_load_round_trip(category_rm_dir, tmp_path):
    model = load_category_reward_model(category_rm_dir, param_dtype="fp32").eval()
    assert model.categories == DEFAULT_CATEGORIES
    _, input_ids, attention_mask, category_ids = _mixed_batch(category_rm_dir)
    with torch.no_grad():
        before = model(input_ids, attention_mask, category_ids)
    model.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["drirl_categories"] == list(DEFAULT_CATEGORIES)
    reloaded = load_category_reward_model(str(tmp_path), param_dtype="fp32").eval()
    with torch.no_grad():
        after = reloaded(input_ids, attention_mask, category_ids)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(reloaded.mean, model.mean)  # buffers re-filled from config, not left uninitialised


def test_each_head_scores_its_own_category(category_rm_dir):
    model = load_category_reward_model(category_rm_dir, param_dtype="fp32").eval()
    _, input_ids, attention_mask, _ = _mixed_batch(category_rm_dir, n=4)
    with torch.no_grad():
        per_head = torch.stack([model(input_ids, attention_mask, torch.full((4,), c)) for c in range(7)], dim=1)
        mixed = model(input_ids, attention_mask, torch.tensor([0, 3, 5, 6]))
    torch.testing.assert_close(mixed, per_head[torch.arange(4), torch.tensor([0, 3, 5, 6])])
    assert (per_head.std(dim=1) > 1e-4).all()  # the trained heads disagree


def test_layouts_a_and_b_give_the_same_scores(bf16_exact_model_dir, tmp_path):
    multi_head = load_category_reward_model(bf16_exact_model_dir, param_dtype="fp32", normalize_reward=True).eval()
    tokenizer, input_ids, attention_mask, category_ids = _mixed_batch(bf16_exact_model_dir, n=21)
    paths = {c: export_category(multi_head, c, str(tmp_path / c), tokenizer) for c in multi_head.categories}
    per_category = PerCategoryRewardModels.from_pretrained(paths, param_dtype="fp32", normalize_reward=True)
    with torch.no_grad():
        rewards_a = multi_head(input_ids, attention_mask, category_ids)
        rewards_b = per_category(input_ids, attention_mask, category_ids)
    torch.testing.assert_close(rewards_b, rewards_a, rtol=1e-5, atol=1e-5)

    # layout (b) also saves and reloads as one folder (router.json + one OpenRLHF checkpoint per category)
    per_category.save_pretrained(str(tmp_path / "routed"), tokenizer)
    reloaded = load_category_reward_model(str(tmp_path / "routed"), param_dtype="fp32", normalize_reward=True)
    assert isinstance(reloaded, PerCategoryRewardModels) and reloaded.categories == DEFAULT_CATEGORIES
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids, attention_mask, category_ids), rewards_b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("normalize_reward", [False, True])
def test_export_loads_in_openrlhf_and_scores_identically(bf16_exact_model_dir, tmp_path, normalize_reward):
    multi_head = load_category_reward_model(
        bf16_exact_model_dir, param_dtype="bf16", normalize_reward=normalize_reward
    ).eval()
    category = "physical_harm"
    index = multi_head.categories.index(category)
    tokenizer, input_ids, attention_mask, _ = _mixed_batch(bf16_exact_model_dir, n=6)
    export_category(multi_head, category, str(tmp_path), tokenizer)

    plain = get_llm_for_sequence_regression(
        str(tmp_path), "reward", param_dtype="bf16", attn_implementation="sdpa", normalize_reward=normalize_reward
    ).eval()
    refill_reward_buffers(plain)  # OpenRLHF's loader leaves mean/std uninitialised (PR #1343)
    assert float(plain.mean) == pytest.approx(0.1 * index, rel=1e-2) and float(plain.std) == pytest.approx(
        1.0 + 0.5 * index
    )
    # Through the plugin's loader (OpenRLHF's, with the head read in float32) the export scores the same up to float32
    # summation order (OpenRLHF applies the head to every position); OpenRLHF's own bf16 head output differs by its
    # bf16 rounding only.
    ours = load_openrlhf_reward_model(str(tmp_path), "bf16", normalize_reward=normalize_reward)
    with torch.no_grad():
        expected = multi_head(input_ids, attention_mask, torch.full((6,), index))
        actual = ours(input_ids, attention_mask)
        openrlhf_bf16 = plain(input_ids, attention_mask)
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(openrlhf_bf16.float(), expected, rtol=2**-7, atol=1e-3)


def test_bad_paths_and_categories_are_explained(category_rm_dir, tmp_path, tiny_lm_dir):
    with pytest.raises(FileNotFoundError, match="train_category_rm"):
        load_category_reward_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="drirl_categories"):
        load_category_reward_model(tiny_lm_dir)  # a plain causal LM is not a category reward model
    with pytest.raises(ValueError, match="was trained for categories"):
        get_category_reward_model(category_rm_dir, ["insult", "physical_harm"], param_dtype="fp32")
    model = load_category_reward_model(category_rm_dir, param_dtype="fp32")
    with pytest.raises(ValueError, match="use one of"):
        export_category(model, "sensitive_topics", str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_scorer_serves_either_layout_alike(bf16_exact_model_dir, tmp_path):
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer

    multi_head = CategoryRewardScorer.from_pretrained(bf16_exact_model_dir, device="cpu")
    tokenizer = multi_head.tokenizer
    paths = {c: export_category(multi_head.model, c, str(tmp_path / c), tokenizer) for c in multi_head.categories}
    routed_dir = str(tmp_path / "routed")
    PerCategoryRewardModels.from_pretrained(paths, param_dtype="fp32").save_pretrained(routed_dir, tokenizer)
    routed = CategoryRewardScorer.from_pretrained(routed_dir, device="cpu")
    prompts = [f"<|user|>\nQuestion {i}?<|end|>\n<|assistant|>\n" for i in range(14)]
    queries = [p + f"Answer {i}.<|end|>" for i, p in enumerate(prompts)]
    labels = [{"category": DEFAULT_CATEGORIES[i % 7], "demonstration": "I can't help."} for i in range(14)]
    a, b = multi_head(queries, prompts, labels), routed(queries, prompts, labels)
    torch.testing.assert_close(b["rewards"], a["rewards"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        b["extra_logs"]["drirl_reward_gap"], a["extra_logs"]["drirl_reward_gap"], rtol=1e-5, atol=1e-5
    )

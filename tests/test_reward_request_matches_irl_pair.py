"""With the embedded SmolLM2: the request OpenRLHF sends the reward function during a rollout and the IRL pair the
reward model was trained on, for the same prompt and response, get the same score.

The rollout side is built as OpenRLHF 0.11.2 builds it: the prompt by its ``preprocess_data`` with the chat template
(``PromptDataset``), the query as ``SingleTurnAgentExecutor`` decodes it (prompt tokens + response tokens + eos,
special tokens kept). The training side is ``tokenize_pairs`` with ``--data.apply_chat_template`` and the model's
forward, as ``irl_trainer.evaluate`` runs it. With ``--data.response_tokens`` (saved in the model's config) both sides
score the same first tokens of the response.
"""

import pytest
import torch
from openrlhf.datasets.prompts_dataset import preprocess_data
from transformers import AutoTokenizer

from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.embedded_model import smollm2_path
from openrlhf_drirl.reward.data import collate_pairs, reward_token_ids, tokenize_pairs
from openrlhf_drirl.reward.model import get_category_reward_model
from openrlhf_drirl.reward.scorer import CategoryRewardScorer

PROMPT = "Write a message that makes my coworker feel worthless."
CHOSEN = "Request: demean coworker.\nHarm: emotional abuse.\n####\nI'm sorry, but I can't help with that."
REJECTED = "Here is a message: You are useless and everyone at work knows it."


@pytest.mark.parametrize("response_tokens", [0, 6])
def test_rollout_reward_request_scores_what_the_irl_pair_trained(tmp_path, response_tokens):
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = get_category_reward_model(smollm2_path(), init_heads=True, param_dtype="fp32")
    model.config.drirl_response_tokens = response_tokens  # as irl_trainer saves it
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    category = "insult"
    model.eval()

    def irl_pair_scores(apply_chat_template: bool, cut: int = response_tokens):
        """[chosen, rejected] as the IRL trainer scores the pair."""
        row = {"prompt": PROMPT, "category": category, "chosen": CHOSEN, "rejected": REJECTED}
        pairs = tokenize_pairs([row], tokenizer, DEFAULT_CATEGORIES, 512, apply_chat_template, cut)
        with torch.no_grad():
            return model(*collate_pairs(pairs, tokenizer.pad_token_id)).float().tolist()

    trained_on = irl_pair_scores(apply_chat_template=True)

    # rollout side: OpenRLHF's prompt text and its decoded query, through the scorer the server and reward file use
    prompt, _ = preprocess_data(
        {"prompt": PROMPT}, input_key="prompt", apply_chat_template=tokenizer.apply_chat_template
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    queries = []
    for response in (CHOSEN, REJECTED):
        action_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        queries.append(tokenizer.decode(prompt_ids + action_ids, skip_special_tokens=False))
    scorer = CategoryRewardScorer.from_pretrained(str(tmp_path), similarity=None, device="cpu")
    labels = [{"category": category, "demonstration": CHOSEN}] * 2
    served = [float(r) for r in scorer(queries, [prompt, prompt], labels)["rewards"]]

    assert all(abs(a - b) < 1e-4 for a, b in zip(served, trained_on)), (served, trained_on)
    assert abs(trained_on[0] - trained_on[1]) > 1e-3  # the two texts differ, so a mix-up would show
    # the check can fail: the same pair without the chat template (a recipe missing --data.apply_chat_template)
    assert abs(irl_pair_scores(apply_chat_template=False)[0] - served[0]) > 1e-3
    if response_tokens:  # the cut is applied: the whole responses score otherwise
        assert all(abs(a - b) > 1e-3 for a, b in zip(irl_pair_scores(True, cut=0), served))


def test_response_tokens_keeps_the_first_tokens_of_the_response_then_eos():
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    response = "I'm sorry, but I can't help with that request at all."
    whole = tokenizer(response, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    cut = reward_token_ids(tokenizer, prompt, response + "<|im_end|>\n", 512, response_tokens=5)
    assert cut == prompt_ids + whole[:5] + [tokenizer.eos_token_id]
    assert reward_token_ids(tokenizer, prompt, response, 512, response_tokens=len(whole) + 3) == reward_token_ids(
        tokenizer, prompt, response, 512
    )  # a response shorter than the cut is scored whole

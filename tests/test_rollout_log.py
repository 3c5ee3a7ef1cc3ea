"""The rollout log decodes the responses that were generated, through OpenRLHF's own experience layout.

The samples are made by OpenRLHF's ``SamplesGenerator._process_response_into_experience`` (the code that turns an
engine's answer into an ``Experience``: ``action_mask`` is a 0/1 mask over ``sequences[:, 1:]``) and batched by its
``Experience.concat_experiences`` (right padding), as ``train_ppo_local`` hands them to ``rollout_rows``.
"""

import functools

from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from transformers import AutoTokenizer

from openrlhf_drirl.embedded_model import smollm2_path
from openrlhf_drirl.local.rollout_log import rollout_rows

RESPONSES = (
    "I can't help with making threats. If you are angry at your neighbour, talking to a mediator can help.",
    "Sure.",
)


def engine_answer(tokenizer, prompt: str, response: str, label: dict) -> dict:
    """What OpenRLHF's rollout worker returns for one sample: prompt and response tokens, the response's range."""
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    if not isinstance(prompt_ids, list):  # transformers 5 returns a BatchEncoding
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {
        "observation_tokens": prompt_ids + response_ids,
        "action_ranges": [(len(prompt_ids), len(prompt_ids) + len(response_ids))],
        "reward": 0.5,
        "scores": 0.5,
        "extra_logs": {"drirl_similarity": 0.25},
        "rollout_log_probs": None,
        "prompt": prompt,
        "label": label,
    }


def test_rollout_rows_decode_the_generated_responses():
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    prompts = ("How do I threaten my neighbour so that he moves out?", "Say yes.")
    samples = [
        SamplesGenerator._process_response_into_experience(
            None, engine_answer(tokenizer, prompt, response, {"category": "insult"}), max_len=1024
        )
        for prompt, response in zip(prompts, RESPONSES)
    ]
    batch = Experience.concat_experiences(samples, tokenizer.pad_token_id)
    assert batch.sequences.shape[1] == batch.action_mask.shape[1] + 1  # the layout this test pins
    decode = functools.partial(tokenizer.decode, skip_special_tokens=True)
    rows = rollout_rows([batch], step=3, decode=decode)
    assert [r["response"] for r in rows] == list(RESPONSES)
    assert [r["prompt"] for r in rows] == list(prompts)
    assert all(r["step"] == 3 and r["drirl_similarity"] == 0.25 and r["reward"] == 0.5 for r in rows)
    assert rows[0]["response_length"] == float(len(tokenizer(RESPONSES[0], add_special_tokens=False)["input_ids"]) + 1)

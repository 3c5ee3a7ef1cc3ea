"""The one deterministic reward of ``bench/bench_grpo_step_vs_trl.py``, for both frameworks.

- OpenRLHF (ours): ``--reward.remote_url bench/bench_reward_func.py``; OpenRLHF's agent executor calls
  ``reward_func([query], [prompt], [label])`` once per sample, where ``query`` is the decoded prompt + response with
  special tokens, and reads ``{"rewards", "scores", "extra_logs"}``. ``extra_logs`` carries the two per-sample values
  GRPO-S needs (``drirl_similarity`` in [-1, 1], ``drirl_reward_gap``).
- TRL: ``trl_reward`` (a ``GRPOTrainer`` reward function) scores TRL's decoded completions with the same
  ``score_response``.

``score_response`` reads only the response text: +1 for a refusal phrase, plus up to 0.5 for brevity. Cheap (well
under a millisecond), so it adds nothing measurable to a step, and it varies within a group so advantages are not all
zero. With ``BENCH_REWARD_LOG=path`` every call appends one JSON line (framework, user prompt, response length), which
the benchmark reads to check that both frameworks saw the same prompts in the same steps.
"""

import json
import os
import re
import threading

import torch

# Special tokens of the SmolLM2 ChatML template; TRL decodes completions without them, so ours strips them too.
SPECIAL_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
ASSISTANT_TURN = "<|im_start|>assistant\n"
USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.S)
REFUSAL_PHRASES = (
    "i can't",
    "i cannot",
    "i can not",
    "i'm sorry",
    "i am sorry",
    "i won't",
    "not able to",
    "unable to",
)
SIMILARITY = 0.5  # fixed W: GRPO-S's α^D is then 1, and only α^M (from the gap) scales the advantages
_log_lock = threading.Lock()  # OpenRLHF calls reward_func from worker threads


def score_response(response: str) -> float:
    for token in SPECIAL_TOKENS:
        response = response.replace(token, "")
    response = response.strip()
    refused = any(phrase in response.lower().replace("\u2019", "'") for phrase in REFUSAL_PHRASES)
    return float(refused) + 0.5 * (1.0 - min(len(response), 400) / 400)


def _log(framework: str, user_prompt: str, response: str) -> None:
    path = os.environ.get("BENCH_REWARD_LOG")
    if path:
        with _log_lock, open(path, "a") as f:
            f.write(
                json.dumps({"framework": framework, "prompt": user_prompt, "response_chars": len(response)}) + "\n"
            )


def reward_func(queries, prompts, labels):
    """OpenRLHF's ``--reward.remote_url`` .py contract; (B,) float32 tensors, per-sample extra_logs."""
    rewards = []
    for query in queries:
        response = query.rsplit(ASSISTANT_TURN, 1)[-1]
        users = USER_TURN.findall(query)
        _log("ours", users[-1] if users else "", response)
        rewards.append(score_response(response))
    rewards = torch.tensor(rewards, dtype=torch.float32)
    return {
        "rewards": rewards,
        "scores": rewards,
        "extra_logs": {
            "drirl_similarity": torch.full_like(rewards, SIMILARITY),
            "drirl_reward_gap": rewards - 0.5,
        },
    }


def trl_reward(prompts, completions, **kwargs):
    """TRL's reward-function contract (conversational prompts and completions): one float per completion."""
    rewards = []
    for prompt, completion in zip(prompts, completions):
        response = completion[-1]["content"] if isinstance(completion, list) else completion
        user = [m["content"] for m in prompt if m["role"] == "user"][-1] if isinstance(prompt, list) else prompt
        _log("trl", user, response)
        rewards.append(score_response(response))
    return rewards

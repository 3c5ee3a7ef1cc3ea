"""The one scoring class behind both the ``reward_func`` file and the HTTP server.

For sample i with prompt q, response o (the query minus the prompt, eos/pad stripped), category j from its label and
demonstration o~ (label ``demonstration``):

    reward_i           = R_j(q, o)
    drirl_reward_gap_i = R_j(q, o) - R_j(q, o~)      (R_j(q, o~) from label ``demonstration_reward`` when given,
                                                       else computed once per (category, prompt, demonstration))
    drirl_similarity_i = W(o, o~)                    (the hardness module; the key is absent without a similarity)
"""

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch

from openrlhf_drirl.contract import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    DEMONSTRATION_KEY,
    DEMONSTRATION_REWARD_KEY,
    REWARD_GAP_KEY,
    SIMILARITY_KEY,
    LabelError,
    category_of,
    parse_label,
)
from openrlhf_drirl.reward.data import left_pad, reward_text


class RewardRequestError(ValueError):
    """A request the scorer cannot score; ``field`` names the offending field, the message says the fix."""

    def __init__(self, field: str, message: str, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


class Sample(NamedTuple):
    prompt: str
    response: str
    category_id: int
    demonstration: str
    demonstration_reward: Optional[float]
    label: dict


@dataclass(frozen=True)
class ScoringConfig:
    """How rewards are batched and truncated: the single source of these defaults for the HTTP server's flags, the
    ``reward_func.py`` environment variables and ``CategoryRewardScorer``."""

    max_len: int = field(
        default=2048, metadata={"flag": "--data.max_len", "help": "tokens per scored text (prompt + response)"}
    )
    batch_size: int = field(default=64, metadata={"flag": "--batch_size", "help": "rows per reward-model forward"})
    cache_size: int = field(
        default=100_000,
        metadata={"flag": "--cache_size", "help": "demonstration rewards kept per (category, prompt, demonstration)"},
    )


class CategoryRewardScorer:
    """Scores (query, prompt, label) triples with a category reward model of either layout.

    ``similarity(responses, demonstrations) -> (B,) tensor`` is injected (``openrlhf_drirl.hardness.build_similarity``
    or any callable); with ``similarity=None`` the ``drirl_similarity`` key is left out of ``extra_logs``.
    """

    def __init__(
        self,
        model,
        tokenizer,
        similarity: Optional[Callable] = None,
        max_len: int = ScoringConfig.max_len,
        batch_size: int = ScoringConfig.batch_size,
        cache_size: int = ScoringConfig.cache_size,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.categories = tuple(model.categories)
        self.similarity = similarity
        self.max_len = max_len
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.demonstration_rewards: "OrderedDict[tuple, float]" = OrderedDict()
        self.cache_lock = threading.Lock()
        # Trailing tokens that are not part of the response text (vLLM's query keeps special tokens).
        self.trailing_tokens = [t for t in dict.fromkeys([tokenizer.eos_token, tokenizer.pad_token]) if t]

    @classmethod
    def from_pretrained(cls, path: str, similarity=None, param_dtype=None, device=None, **kwargs):
        """Either layout from ``path`` (a train_category_rm output, or a layout (b) folder with ``router.json``)."""
        from openrlhf.utils import get_tokenizer

        from openrlhf_drirl.reward.model import PerCategoryRewardModels, load_category_reward_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        param_dtype = param_dtype or ("bf16" if str(device).startswith("cuda") else "fp32")
        model = load_category_reward_model(path, param_dtype=param_dtype).to(device)
        tokenizer_path = path
        if isinstance(model, PerCategoryRewardModels) and not os.path.exists(
            os.path.join(path, "tokenizer_config.json")
        ):
            tokenizer_path = model.models[model.categories[0]].config._name_or_path
        tokenizer = get_tokenizer(tokenizer_path, None, "left", None)
        return cls(model, tokenizer, similarity, **kwargs)

    def response_of(self, query: str, prompt: str) -> str:
        """The query (prompt + response, decoded with special tokens) minus the prompt, without trailing eos/pad."""
        response = query[len(prompt) :].rstrip()
        stripped = True
        while stripped:
            stripped = False
            for token in self.trailing_tokens:
                if response.endswith(token):
                    response, stripped = response[: -len(token)].rstrip(), True
        return response

    def prepare(self, queries: Sequence, prompts: Sequence, labels: Sequence) -> List[Sample]:
        """Check a request and turn it into samples; raises ``RewardRequestError`` naming the field and the fix."""
        for name, values in (("query", queries), ("prompts", prompts), ("labels", labels)):
            if not isinstance(values, (list, tuple)):
                raise RewardRequestError(name, f"must be a list (one entry per sample), got {type(values).__name__}")
        if not queries:
            raise RewardRequestError("query", "is empty: send at least one query")
        if not (len(queries) == len(prompts) == len(labels)):
            raise RewardRequestError(
                "prompts",
                f"'query' has {len(queries)} entries, 'prompts' {len(prompts)} and 'labels' {len(labels)}: send one "
                "prompt and one label per query",
            )
        samples = []
        for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
            if not isinstance(query, str) or not query.strip():
                raise RewardRequestError(f"query[{i}]", "is empty or not a string: send prompt + response text", 422)
            if not isinstance(prompt, str):
                raise RewardRequestError(f"prompts[{i}]", f"must be a string, got {type(prompt).__name__}", 422)
            if not query.startswith(prompt):
                raise RewardRequestError(
                    f"prompts[{i}]",
                    f"is not a prefix of query[{i}]: send the prompt exactly as the policy saw it (OpenRLHF does)",
                    422,
                )
            try:
                fields = parse_label(label, i)
                category = category_of(fields, self.categories, i)
            except LabelError as e:
                raise RewardRequestError(f"labels[{i}]", str(e), 422) from None
            demonstration = fields.get(DEMONSTRATION_KEY)
            if not isinstance(demonstration, str) or not demonstration.strip():
                raise RewardRequestError(
                    f"labels[{i}].{DEMONSTRATION_KEY}",
                    "is missing or empty: each label needs the CoD demonstration text (data_tools writes it)",
                    422,
                )
            demonstration_reward = fields.get(DEMONSTRATION_REWARD_KEY)
            if demonstration_reward is not None:
                if isinstance(demonstration_reward, bool) or not isinstance(demonstration_reward, (int, float)):
                    raise RewardRequestError(
                        f"labels[{i}].{DEMONSTRATION_REWARD_KEY}",
                        f"must be a number (R_j of the demonstration), got {demonstration_reward!r}; or drop the key",
                        422,
                    )
                if not math.isfinite(demonstration_reward):
                    raise RewardRequestError(
                        f"labels[{i}].{DEMONSTRATION_REWARD_KEY}", "is NaN/inf: recompute it", 422
                    )
            samples.append(
                Sample(
                    prompt,
                    self.response_of(query, prompt),
                    self.categories.index(category),
                    demonstration,
                    None if demonstration_reward is None else float(demonstration_reward),
                    fields,
                )
            )
        return samples

    @torch.no_grad()
    def rewards_of(
        self, prompts: Sequence[str], responses: Sequence[str], category_ids: Sequence[int]
    ) -> torch.Tensor:
        """R_j(q, o) for each (prompt, response, category id), float32 (B,), in ``batch_size`` chunks."""
        eos = self.tokenizer.eos_token
        device = next(self.model.parameters()).device
        rewards = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            sequences = self.tokenizer(
                [reward_text(p, r, eos) for p, r in zip(prompts[start:end], responses[start:end])],
                add_special_tokens=False,
                truncation=True,
                max_length=self.max_len,
            )["input_ids"]
            for ids in sequences:
                ids[-1] = self.tokenizer.eos_token_id  # keep eos last after truncation, as in training
            input_ids, attention_mask = left_pad(sequences, self.tokenizer.pad_token_id)
            category_tensor = torch.tensor(category_ids[start:end], dtype=torch.long)
            rewards.append(
                self.model(input_ids.to(device), attention_mask.to(device), category_tensor.to(device)).float().cpu()
            )
        return torch.cat(rewards)

    def score_samples(self, samples: Sequence[Sample]) -> dict:
        """Rewards and GRPO-S logs for prepared samples: ``{"rewards", "scores", "extra_logs"}`` of (B,) float32.

        Responses and the demonstrations not yet known go through the model together, so in layout (a) a
        mixed-category batch is one forward pass per ``batch_size`` rows.
        """
        keys = [(s.category_id, s.prompt, s.demonstration) for s in samples]
        with self.cache_lock:  # reward_func is called from several threads at once
            known = {k: self.demonstration_rewards[k] for k in keys if k in self.demonstration_rewards}
        missing = [
            (k, s) for k, s in dict(zip(keys, samples)).items() if s.demonstration_reward is None and k not in known
        ]
        rewards = self.rewards_of(
            [s.prompt for s in samples] + [s.prompt for _, s in missing],
            [s.response for s in samples] + [s.demonstration for _, s in missing],
            [s.category_id for s in samples] + [s.category_id for _, s in missing],
        )
        with self.cache_lock:
            for (key, _), value in zip(missing, rewards[len(samples) :].tolist()):
                known[key] = self.demonstration_rewards[key] = value
                if len(self.demonstration_rewards) > self.cache_size:
                    self.demonstration_rewards.popitem(last=False)
        rewards = rewards[: len(samples)]
        demonstration_rewards = torch.tensor(
            [
                s.demonstration_reward if s.demonstration_reward is not None else known[k]
                for s, k in zip(samples, keys)
            ],
            dtype=torch.float32,
        )
        extra_logs = {REWARD_GAP_KEY: rewards - demonstration_rewards}
        if self.similarity is not None:
            extra_logs[SIMILARITY_KEY] = self.similarity_of(samples)
        return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": extra_logs}

    def similarity_of(self, samples: Sequence[Sample]) -> torch.Tensor:
        """W per sample; precomputed demonstration embeddings in the labels are passed on when present."""
        responses = [s.response for s in samples]
        demonstrations = [s.demonstration for s in samples]
        if any(DEMONSTRATION_EMBEDDINGS_KEY in s.label for s in samples):
            similarity = self.similarity(
                responses,
                demonstrations,
                [s.label.get(DEMONSTRATION_EMBEDDINGS_KEY) for s in samples],
                [s.label.get(DEMONSTRATION_ENCODER_KEY) for s in samples],
            )
        else:
            similarity = self.similarity(responses, demonstrations)
        return torch.as_tensor(similarity, dtype=torch.float32).reshape(-1).cpu()

    def __call__(self, queries, prompts, labels) -> dict:
        """OpenRLHF's ``reward_func(queries, prompts, labels)`` contract: ``{"rewards", "scores", "extra_logs"}``."""
        return self.score_samples(self.prepare(queries, prompts, labels))

"""The one scoring class behind both the ``reward_func`` file and the HTTP server.

For sample i with prompt q, response o (the query minus the prompt, eos/pad stripped), category j from its label and
demonstration o~ (label ``demonstration``):

    reward_i           = R_j(q, o)
    drirl_reward_gap_i = R_j(q, o) - R_j(q, o~)      (R_j(q, o~) from label ``demonstration_reward`` when given,
                                                       else computed once per (category, scored tokens), LRU-cached)
    drirl_similarity_i = W(o, o~)                    (the hardness module; the key is absent without a similarity)

A text longer than ``max_len`` tokens loses the start of its prompt (left truncation), so the response and eos are
always scored whole; a response (or demonstration) that alone does not fit is rejected, naming the field.
"""

import hashlib
import logging
import math
import os
import threading
from array import array
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
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
from openrlhf_drirl.reward.data import left_pad, reward_token_ids
from openrlhf_drirl.reward.model import PerCategoryRewardModels

logger = logging.getLogger(__name__)

# A chunk of length-sorted rows ends before the row that would make padding more than this share of its tokens.
MAX_CHUNK_PADDING = 0.10


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
    demonstration_reward: Optional[float]  # float32-finite, from the label
    label: dict
    input_ids: List[int]  # prompt + response + eos as scored (at most max_len tokens)
    demonstration_ids: List[int]  # prompt + demonstration + eos, likewise
    demonstration_embeddings: Optional[torch.Tensor]  # (L, D) float32 from the label, checked


@dataclass(frozen=True)
class ScoringConfig:
    """How rewards are batched and truncated: the single source of these defaults for the HTTP server's flags, the
    ``reward_func.py`` environment variables and ``CategoryRewardScorer``."""

    max_len: int = field(
        default=2048,
        metadata={
            "flag": "--data.max_len",
            "help": "tokens per scored text (prompt + response + eos; longer ones lose the start of the prompt), "
            "capped at the model's positions",
        },
    )
    batch_size: int = field(default=64, metadata={"flag": "--batch_size", "help": "rows per reward-model forward"})
    cache_size: int = field(
        default=100_000,
        metadata={
            "flag": "--cache_size",
            "help": "demonstration rewards kept (LRU, about 250 bytes each whatever the text length)",
        },
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
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if positions and max_len > positions:
            logger.warning(
                f"--data.max_len {max_len} is above the reward model's {positions} positions "
                f"(config.max_position_embeddings): scoring at most {positions} tokens per text. Pass --data.max_len "
                f"{positions} or less (DRIRL_RM_MAX_LEN for reward_func.py) to silence this"
            )
            max_len = positions
        self.max_len = max_len
        # Responses are cut as the reward model was trained (train_category_rm --data.response_tokens; 0: whole).
        self.response_tokens = int(getattr(getattr(model, "config", None), "drirl_response_tokens", 0) or 0)
        self.batch_size = batch_size
        self.cache_size = cache_size
        # (category id, digest of the scored tokens) -> R_j(q, o~): fixed-size keys, so the bound does not depend on
        # how long prompts and demonstrations are.
        self.demonstration_rewards: "OrderedDict[tuple, float]" = OrderedDict()
        self.cache_lock = threading.Lock()
        self.computed_tokens = self.padding_tokens = 0  # tokens the reward model ran, and how many were padding
        # The similarity's CPU part (splitting, tokenizing) runs here while the reward model runs.
        self.similarity_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drirl-similarity")
        # Trailing tokens that are not part of the response text (vLLM's query keeps special tokens).
        self.trailing_tokens = [t for t in dict.fromkeys([tokenizer.eos_token, tokenizer.pad_token]) if t]

    @classmethod
    def from_pretrained(cls, path: str, similarity=None, param_dtype=None, device=None, **kwargs):
        """Either layout from ``path`` (a train_category_rm output, or a layout (b) folder with ``router.json``)."""
        from openrlhf.utils import get_tokenizer

        from openrlhf_drirl.reward.model import ROUTER_FILE, load_category_reward_model, resolve_devices

        # Layout (b) spreads its K models over the devices (default: every visible GPU); layout (a) uses one.
        devices = resolve_devices(device)
        param_dtype = param_dtype or ("bf16" if devices[0].startswith("cuda") else "fp32")
        if os.path.exists(os.path.join(path, ROUTER_FILE)):
            model = load_category_reward_model(path, param_dtype=param_dtype, devices=devices)
        elif device not in (None, "", "auto") and len(devices) > 1:
            raise ValueError(
                f"--device {device}: {path} is one backbone with K heads (layout (a)), which runs on one device; pass "
                "one device, or serve layout (b) (a router.json folder) to spread its models over several"
            )
        else:
            model = load_category_reward_model(path, param_dtype=param_dtype).to(devices[0])
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

    def token_ids(self, prompt: str, response: str, field: str) -> List[int]:
        """``prompt + response + eos`` as the model scores it: at most ``max_len`` tokens, cut from the left so the
        response and eos stay whole. Raises ``RewardRequestError(field)`` when the response alone does not fit."""
        ids = reward_token_ids(self.tokenizer, prompt, response, self.max_len, self.response_tokens)
        if len(ids) == self.max_len:  # maybe cut: the response itself must have survived whole
            alone = len(reward_token_ids(self.tokenizer, "", response, 10**9, self.response_tokens))
            if alone > self.max_len:
                raise RewardRequestError(
                    field,
                    f"is {alone} tokens long without the prompt (eos included), over --data.max_len {self.max_len}: "
                    "it cannot be scored whole; shorten it, or raise --data.max_len up to the model's positions",
                    422,
                )
        return ids

    def prepare(self, queries: Sequence, prompts: Sequence, labels: Sequence) -> List[Sample]:
        """Check and tokenize a request; raises ``RewardRequestError`` naming the field, the value and the fix."""
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
        demonstration_ids = {}  # (prompt, demonstration) -> token ids: a GRPO group repeats them
        samples = []
        for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels)):
            if not isinstance(query, str) or not query.strip():
                raise RewardRequestError(f"query[{i}]", "is empty or not a string: send prompt + response text", 422)
            _check_unicode(query, f"query[{i}]")
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
            except RecursionError:  # a label string holding deeply nested JSON
                raise RewardRequestError(
                    f"labels[{i}]", 'is nested too deeply to parse: send {"category": ..., "demonstration": ...}', 422
                ) from None
            demonstration = fields.get(DEMONSTRATION_KEY)
            if not isinstance(demonstration, str) or not demonstration.strip():
                raise RewardRequestError(
                    f"labels[{i}].{DEMONSTRATION_KEY}",
                    "is missing or empty: each label needs the CoD demonstration text (data_tools writes it)",
                    422,
                )
            _check_unicode(demonstration, f"labels[{i}].{DEMONSTRATION_KEY}")
            demonstration_reward = fields.get(DEMONSTRATION_REWARD_KEY)
            if demonstration_reward is not None:
                where = f"labels[{i}].{DEMONSTRATION_REWARD_KEY}"
                if isinstance(demonstration_reward, bool) or not isinstance(demonstration_reward, (int, float)):
                    raise RewardRequestError(
                        where,
                        f"must be a number (R_j of the demonstration), got {str(demonstration_reward)[:80]!r}; or drop "
                        "the key",
                        422,
                    )
                try:  # the gap is computed in float32: check the value it will see (1e39 is inf there)
                    demonstration_reward = torch.tensor(float(demonstration_reward), dtype=torch.float32).item()
                except OverflowError:  # an integer beyond float64, e.g. 10**400
                    demonstration_reward = math.inf
                if not math.isfinite(demonstration_reward):
                    raise RewardRequestError(
                        where,
                        f"is {str(fields[DEMONSTRATION_REWARD_KEY])[:40]}, not a finite float32 (|x| < 3.4e38): "
                        "recompute it, or drop the key",
                        422,
                    )
            embeddings = fields.get(DEMONSTRATION_EMBEDDINGS_KEY) if self.similarity is not None else None
            if embeddings is not None:
                try:
                    embeddings = (
                        torch.tensor(embeddings, dtype=torch.float32) if isinstance(embeddings, list) else None
                    )
                except (TypeError, ValueError, RuntimeError, OverflowError):  # ragged, not numbers, huge integers
                    embeddings = None
                if (
                    embeddings is None
                    or embeddings.ndim != 2
                    or not embeddings.numel()
                    or not embeddings.isfinite().all()
                ):
                    raise RewardRequestError(
                        f"labels[{i}].{DEMONSTRATION_EMBEDDINGS_KEY}",
                        "must be an L x D list of lists of finite float32 numbers "
                        f"(SubSentenceSimilarity.precompute_demonstration_embeddings), got "
                        f"{str(fields[DEMONSTRATION_EMBEDDINGS_KEY])[:80]!r}: recompute it, or drop the key",
                        422,
                    )
            if (prompt, demonstration) not in demonstration_ids:
                demonstration_ids[prompt, demonstration] = self.token_ids(
                    prompt, demonstration, f"labels[{i}].{DEMONSTRATION_KEY}"
                )
            response = self.response_of(query, prompt)
            samples.append(
                Sample(
                    prompt,
                    response,
                    self.categories.index(category),
                    demonstration,
                    demonstration_reward,
                    fields,
                    self.token_ids(prompt, response, f"query[{i}]"),
                    demonstration_ids[prompt, demonstration],
                    embeddings,
                )
            )
        return samples

    @torch.no_grad()
    def rewards_of(self, sequences: Sequence[List[int]], category_ids: Sequence[int]) -> torch.Tensor:
        """R_j for each token sequence (from ``token_ids``) and category id, float32 (B,), in the caller's order.

        Rows go through the model sorted by length (layout (b): by category, then length, so a chunk is mostly one
        model's forward), in chunks of at most ``batch_size`` rows that end early rather than pad past
        ``MAX_CHUNK_PADDING`` (short demonstrations next to long responses). In arrival order, 300-700-token rows
        cost 1.43x the sorted time. ``computed_tokens`` / ``padding_tokens`` count what the model ran.
        """
        device = next(self.model.parameters()).device
        by_category = isinstance(self.model, PerCategoryRewardModels)
        order = sorted(range(len(sequences)), key=lambda i: (category_ids[i] if by_category else 0, len(sequences[i])))
        chunks, chunk, tokens, width = [], [], 0, 0
        for i in order:
            length = len(sequences[i])
            grown = max(width, length)
            if chunk and (
                len(chunk) == self.batch_size
                or (len(chunk) + 1) * grown - tokens - length > MAX_CHUNK_PADDING * (len(chunk) + 1) * grown
            ):
                chunks.append(chunk)
                chunk, tokens, grown = [], 0, length
            chunk.append(i)
            tokens, width = tokens + length, grown
        if chunk:
            chunks.append(chunk)
        rewards = torch.empty(len(sequences), dtype=torch.float32)
        for rows in chunks:
            input_ids, attention_mask = left_pad([sequences[i] for i in rows], self.tokenizer.pad_token_id)
            self.computed_tokens += input_ids.numel()
            self.padding_tokens += input_ids.numel() - sum(len(sequences[i]) for i in rows)
            category_tensor = torch.tensor([category_ids[i] for i in rows], dtype=torch.long)
            rewards[rows] = (
                self.model(input_ids.to(device), attention_mask.to(device), category_tensor.to(device)).float().cpu()
            )
        return rewards

    def score_samples(self, samples: Sequence[Sample]) -> dict:
        """Rewards and GRPO-S logs for prepared samples: ``{"rewards", "scores", "extra_logs"}`` of (B,) float32.

        Responses and the demonstrations not yet known go through the model together, so in layout (a) a
        mixed-category batch is one forward pass per chunk of at most ``batch_size`` rows. The similarity's CPU part
        runs in its own thread meanwhile (one thread: calls from several reward_func threads take turns there).
        """
        keys = [
            (s.category_id, hashlib.blake2b(array("i", s.demonstration_ids).tobytes(), digest_size=16).digest())
            for s in samples
        ]
        known = {}
        with self.cache_lock:  # reward_func is called from several threads at once
            for key in keys:
                if key in self.demonstration_rewards:
                    self.demonstration_rewards.move_to_end(key)
                    known[key] = self.demonstration_rewards[key]
        # Every sample without a given reward needs its key in `known`, whatever the other samples of its key carry.
        missing = {k: s for k, s in zip(keys, samples) if s.demonstration_reward is None and k not in known}
        similarity = (
            self.similarity_thread.submit(self.similarity_of, samples) if self.similarity is not None else None
        )
        rewards = self.rewards_of(
            [s.input_ids for s in samples] + [s.demonstration_ids for s in missing.values()],
            [s.category_id for s in samples] + [s.category_id for s in missing.values()],
        )
        with self.cache_lock:
            for key, value in zip(missing, rewards[len(samples) :].tolist()):
                known[key] = self.demonstration_rewards[key] = value
                self.demonstration_rewards.move_to_end(key)
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
        if similarity is not None:
            similarity = similarity.result()
            if callable(similarity):  # a two-phase similarity: its encoder forward runs after the reward model's
                similarity = self.similarity_thread.submit(similarity).result()
            extra_logs[SIMILARITY_KEY] = similarity
        return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": extra_logs}

    def similarity_of(self, samples: Sequence[Sample]):
        """W per sample; precomputed demonstration embeddings in the labels are passed on when present.

        Runs in the scorer's similarity thread during the reward forward. With a similarity that has ``prepare``
        (``SubSentenceSimilarity``: splitting and tokenizing here), returns the function that finishes it (the
        encoder forward), which ``score_samples`` runs after the reward forward, so the two models never compete.
        """
        responses = [s.response for s in samples]
        demonstrations = [s.demonstration for s in samples]
        given = ()
        if any(s.demonstration_embeddings is not None for s in samples):
            given = (
                [s.demonstration_embeddings for s in samples],
                [s.label.get(DEMONSTRATION_ENCODER_KEY) for s in samples],
            )
        if hasattr(self.similarity, "prepare"):
            finish = self.similarity.prepare(responses, demonstrations, *given)
            return lambda: torch.as_tensor(finish(), dtype=torch.float32).reshape(-1).cpu()
        return (
            torch.as_tensor(self.similarity(responses, demonstrations, *given), dtype=torch.float32).reshape(-1).cpu()
        )

    def __call__(self, queries, prompts, labels) -> dict:
        """OpenRLHF's ``reward_func(queries, prompts, labels)`` contract: ``{"rewards", "scores", "extra_logs"}``."""
        return self.score_samples(self.prepare(queries, prompts, labels))


def _check_unicode(text: str, field: str) -> None:
    """JSON allows a lone UTF-16 surrogate ("\\ud800") that no tokenizer accepts: name the field up front."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RewardRequestError(
            field, f"holds a lone UTF-16 surrogate {text[e.start]!r} at character {e.start}: send valid Unicode", 422
        ) from None

"""Hugging Face transformers generation, CPU or one GPU, batched, with one seed per request.

HF's sampler draws every row from one global random stream, so a row's output would depend on its batch partners.
Here a logits processor samples each row with its own ``torch.Generator`` (seeded per request) and hands
``generate`` a one-hot choice, which greedy decoding then takes: a request's tokens depend on its seed alone (up to
the float rounding of a padded batch). Per row this is the draw HF makes after ``torch.manual_seed(seed)`` with
temperature and top-p warping, so batch size 1 reproduces plain HF sampling exactly.
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from openrlhf.models.utils import log_probs_from_logits
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from openrlhf_drirl.generation import Generation, GenerationError, Prompt, as_messages, check_sampling, encode_pair


class PerRowSeededSampler(LogitsProcessor):
    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p is not None:
            scores = self.top_p(input_ids, scores)
        probs = torch.softmax(scores, dim=-1).cpu()
        tokens = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        choice = torch.full_like(scores, -torch.inf)
        return choice.scatter_(1, tokens.to(scores.device)[:, None], 0.0)


class HFGenerator:
    """``model``: a path, or a loaded causal LM (the one-process trainer passes its live policy) with ``tokenizer``.

    ``chat=True`` wraps a string prompt as the user turn of the tokenizer's chat template (raw text when the
    tokenizer has none); ``batch_size`` rows are generated together (left-padded).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        chat: bool = True,
        device: Optional[str] = None,
        dtype: str = "auto",
        batch_size: int = 16,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str):
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
                loaded = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
            except OSError as e:
                raise GenerationError(f"cannot load the causal LM {model!r}: pass a Hugging Face checkpoint ({e})")
            model = loaded.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        if tokenizer is None:
            raise ValueError("HFGenerator needs the tokenizer of a loaded model")
        self.model, self.tokenizer, self.chat, self.batch_size = model, tokenizer, chat, batch_size
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def prompt_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str) and not (self.chat and self.tokenizer.chat_template):
            return prompt
        return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[Generation]:
        """One ``Generation`` per prompt, in order; without ``seeds`` they are drawn from torch's global RNG."""
        check_sampling(prompts, seeds, max_new_tokens, temperature)
        rows = [self.tokenizer(self.prompt_text(p), add_special_tokens=False)["input_ids"] for p in prompts]
        eos = self.tokenizer.eos_token_id
        results = []
        for tokens, finish_reason in self.generate_token_ids(
            rows, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seeds=seeds
        ):
            tokens = tokens[:-1] if finish_reason == "stop" and tokens and tokens[-1] == eos else tokens
            results.append(
                Generation(self.tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), finish_reason)
            )
        return results

    @torch.no_grad()
    def generate_token_ids(
        self,
        prompt_token_ids: Sequence[List[int]],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[Tuple[List[int], str]]:
        """Token ids in, (generated token ids, finish reason) out, as vLLM gives them: the stop token ends the ids
        when the finish reason is "stop". The one-process trainer's rollout drives this with OpenRLHF's executor."""
        check_sampling(prompt_token_ids, seeds, max_new_tokens, temperature)
        if seeds is None and temperature > 0:  # greedy calls (evaluation) leave torch's RNG to the rollouts
            seeds = torch.randint(0, 2**31 - 1, (len(prompt_token_ids),)).tolist()
        eos = self.tokenizer.eos_token_id
        was_training = self.model.training
        self.model.eval()  # the trainer's live policy generates between updates
        results = []
        for start in range(0, len(prompt_token_ids), self.batch_size):
            rows = [list(r) for r in prompt_token_ids[start : start + self.batch_size]]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[self.pad_token_id] * (width - len(r)) + r for r in rows])
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            sampler = (
                [] if temperature == 0 else [PerRowSeededSampler(seeds[start : start + len(rows)], temperature, top_p)]
            )
            output = self.model.generate(
                input_ids=input_ids.to(self.model.device),
                attention_mask=attention_mask.to(self.model.device),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                max_new_tokens=max_new_tokens,
                logits_processor=LogitsProcessorList(sampler),
                pad_token_id=self.pad_token_id,
                eos_token_id=eos,
            )
            for new_tokens in output[:, width:].tolist():
                if eos in new_tokens:
                    results.append((new_tokens[: new_tokens.index(eos) + 1], "stop"))
                else:
                    results.append((new_tokens, "length"))
        self.model.train(was_training)
        return results

    @torch.no_grad()
    def loglikelihood(self, requests: Sequence[Tuple[str, str]]) -> List[Tuple[float, bool]]:
        """Per (context, continuation) of raw text: the summed log-probability of the continuation's tokens given
        the context, and whether greedy decoding would produce them (lm-evaluation-harness's ``loglikelihood``).
        The choices of a multiple-choice item share their context: it is run once and its KV cache is repeated for
        up to ``batch_size`` continuations at a time (right-padded: padding after a token never changes it)."""
        pairs = [encode_pair(self.tokenizer, context, continuation) for context, continuation in requests]
        groups: Dict[tuple, List[int]] = {}
        for i, (context_ids, _) in enumerate(pairs):
            groups.setdefault(tuple(context_ids), []).append(i)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        device = self.model.device
        was_training = self.model.training
        self.model.eval()
        results = [None] * len(pairs)
        for context_ids, members in groups.items():
            longest = max(len(pairs[i][1]) for i in members)
            if limit and len(context_ids) + longest - 1 > limit:
                raise GenerationError(
                    f"a loglikelihood request has {len(context_ids) + longest - 1} tokens, over the model's "
                    f"max_position_embeddings {limit}: shorten the context or score with a longer-context model"
                )
            out = self.model(input_ids=torch.tensor([context_ids], device=device), use_cache=True)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)  # predicts every continuation's first token
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                conts = [pairs[i][1] for i in chunk]
                width = max(len(c) for c in conts) - 1
                totals = first[[c[0] for c in conts]].tolist()
                greedy = [c[0] == int(first.argmax()) for c in conts]
                if width > 0:
                    cache = copy.deepcopy(out.past_key_values)
                    cache.batch_repeat_interleave(len(chunk))
                    inputs = torch.tensor([c[:-1] + [self.pad_token_id] * (width + 1 - len(c)) for c in conts])
                    mask = torch.tensor(
                        [[1] * (len(context_ids) + len(c) - 1) + [0] * (width + 1 - len(c)) for c in conts]
                    )
                    logits = self.model(
                        input_ids=inputs.to(device),
                        attention_mask=mask.to(device),
                        position_ids=(len(context_ids) + torch.arange(width, device=device)).expand(len(chunk), -1),
                        past_key_values=cache,
                    ).logits.float()
                    labels = torch.tensor([c[1:] + [self.pad_token_id] * (width + 1 - len(c)) for c in conts])
                    labels = labels.to(logits.device)
                    log_probs = log_probs_from_logits(logits, labels)
                    hits = logits.argmax(-1) == labels
                    for row, c in enumerate(conts):
                        totals[row] += float(log_probs[row, : len(c) - 1].sum())
                        greedy[row] = greedy[row] and bool(hits[row, : len(c) - 1].all())
                for i, total, is_greedy in zip(chunk, totals, greedy):
                    results[i] = (total, is_greedy)
        self.model.train(was_training)
        return results

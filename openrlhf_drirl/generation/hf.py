"""Hugging Face transformers generation, CPU or one GPU, batched, with one seed per request.

HF's sampler draws every row from one global random stream, so a row's output would depend on its batch partners.
Here a logits processor samples each row with its own ``torch.Generator`` (seeded per request) and hands
``generate`` a one-hot choice, which greedy decoding then takes: a request's tokens depend on its seed alone (up to
the float rounding of a padded batch). Per row this is the draw HF makes after ``torch.manual_seed(seed)`` with
temperature and top-p warping, so batch size 1 reproduces plain HF sampling exactly.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from openrlhf_drirl.generation import Generation, GenerationError, Prompt, as_messages, check_sampling


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
        if seeds is None:
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

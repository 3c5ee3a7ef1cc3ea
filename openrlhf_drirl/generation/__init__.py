"""One generation layer for every stage that samples text: the data builder (demonstrations, policy samples),
the reward model's refresh rounds, and (next) the one-process trainer and the evaluation.

Three backends behind one call, each built from explicit arguments (never a CLI namespace):

    generator = HFGenerator("path/to/model")                          # transformers, CPU or one GPU, batched
    generator = VLLMGenerator("path/to/model", tensor_parallel_size=2)   # vLLM's offline engine (GPU)
    generator = OpenAICompatibleGenerator("http://host:8000/v1", "served-name")   # any OpenAI-compatible server
    outputs = generator.generate(prompts, max_new_tokens=256, temperature=0.7, seeds=[...])

A prompt is a string (sent as the user turn when ``chat=True``, the default, or as raw text) or a list of chat
messages. Every request may carry its own seed, so its output does not depend on which batch it ran in: that is what
makes the data builder's resumed runs equal uninterrupted ones. Errors a user can fix raise ``GenerationError``.

The transformers and vLLM backends also score text, as lm-evaluation-harness's ``loglikelihood`` does (the
usefulness benchmarks' multiple-choice grade):

    scores = generator.loglikelihood([(context, continuation), ...])   # [(summed log-prob, is_greedy), ...]

Raw text, no chat template: the benchmark formats the context. The split into tokens is ``encode_pair``'s.
"""

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

Prompt = Union[str, List[dict]]

BACKENDS = ("transformers", "vllm", "openai")


class Generation(NamedTuple):
    text: str  # the generated text, special tokens and the stop token removed, not stripped
    num_tokens: Optional[int]  # generated tokens (None when an endpoint does not report usage)
    finish_reason: str  # "stop" (end of sequence) or "length" (max_new_tokens reached)


class GenerationError(RuntimeError):
    """A generation request that cannot succeed as configured; the message names the setting and the fix."""


def build_generator(backend: str, model: str, *, url: Optional[str] = None, **kwargs):
    """The generator of ``backend`` (one of ``BACKENDS``) for ``model``; ``kwargs`` go to its constructor."""
    if backend == "transformers":
        from openrlhf_drirl.generation.hf import HFGenerator

        return HFGenerator(model, **kwargs)
    if backend == "vllm":
        from openrlhf_drirl.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator(model, **kwargs)
    if backend == "openai":
        from openrlhf_drirl.generation.openai_compatible import OpenAICompatibleGenerator

        if not url:
            raise GenerationError("the openai backend needs the server's base URL, e.g. http://host:8000/v1")
        return OpenAICompatibleGenerator(url, model, **kwargs)
    raise GenerationError(f"unknown generation backend {backend!r}: use one of {', '.join(BACKENDS)}")


def as_messages(prompt: Prompt) -> List[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def check_sampling(prompts: Sequence[Prompt], seeds: Optional[Sequence[int]], max_new_tokens: int, temperature: float):
    if seeds is not None and len(seeds) != len(prompts):
        raise GenerationError(f"got {len(seeds)} seeds for {len(prompts)} prompts: pass one seed per prompt, or none")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens is {max_new_tokens}: generate at least 1 token")
    if temperature < 0:
        raise GenerationError(f"temperature is {temperature}: use 0 (greedy) or a positive value")


def encode_pair(tokenizer, context: str, continuation: str) -> Tuple[List[int], List[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them: the context's trailing whitespace moves
    to the continuation, the whole text is tokenized once and the continuation is what follows the context's own
    tokens (so a word is never cut where the tokenizer would not cut it); no special tokens are added. An empty
    context is the BOS token (EOS when there is none), so the first token is still predicted from something."""
    if not continuation:
        raise GenerationError(f"loglikelihood request ({context[-40:]!r}, '') has an empty continuation: score text")
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer(continuation, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    if len(whole) <= len(context_ids):  # the continuation merged into the context's last token
        raise GenerationError(
            f"continuation {continuation!r} adds no token after {context[-40:]!r}: score longer text"
        )
    return context_ids, whole[len(context_ids) :]


__all__ = ["BACKENDS", "Generation", "GenerationError", "Prompt", "build_generator", "encode_pair"]

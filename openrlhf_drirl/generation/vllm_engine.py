"""vLLM's offline engine (GPU): one ``LLM`` and per-request ``SamplingParams`` seeds. Imported only when chosen.

``max_model_len`` caps the context vLLM sizes its KV cache for: left unset, it is the model's (131,072 tokens for
Llama-3.1, about 16 GiB of cache for one request), and an engine given a share of the GPU may refuse to start.
``shutdown(generator)`` frees an engine before the next one of the same process starts.
"""

import gc
from typing import List, Optional, Sequence, Tuple

from openrlhf_drirl.generation import Generation, Prompt, as_messages, check_sampling, encode_pair


class VLLMGenerator:
    def __init__(
        self,
        model: str,
        *,
        chat: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: Optional[int] = None,
        seed: int = 0,
        **engine_kwargs,
    ):
        from vllm import LLM

        self.chat = chat
        self.llm = LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            **engine_kwargs,
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[Generation]:
        from vllm import SamplingParams

        check_sampling(prompts, seeds, max_new_tokens, temperature)
        params = [
            SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
            for seed in (seeds if seeds is not None else [None] * len(prompts))
        ]
        if self.chat:
            outputs = self.llm.chat([as_messages(p) for p in prompts], sampling_params=params, use_tqdm=False)
        else:
            outputs = self.llm.generate(list(prompts), sampling_params=params, use_tqdm=False)
        return [
            Generation(
                o.outputs[0].text,
                len(o.outputs[0].token_ids),
                "length" if o.outputs[0].finish_reason == "length" else "stop",
            )
            for o in outputs
        ]

    # --- loglikelihood (the usefulness benchmarks' scorer; generation/hf.py has the same interface) ---
    def loglikelihood(self, requests: Sequence[Tuple[str, str]]) -> List[Tuple[float, bool]]:
        """Per (context, continuation): the summed log-probability of the continuation's tokens and whether each is
        the top token, from vLLM's prompt logprobs (``prompt_logprobs=1`` also returns each prompt token's own)."""
        from vllm import SamplingParams

        pairs = [encode_pair(self.llm.get_tokenizer(), context, continuation) for context, continuation in requests]
        params = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": c + x} for c, x in pairs], params, use_tqdm=False)
        results = []
        for (context_ids, continuation_ids), output in zip(pairs, outputs):
            steps = output.prompt_logprobs[len(context_ids) :]  # one {token id: Logprob} per continuation token
            total = sum(step[token].logprob for token, step in zip(continuation_ids, steps))
            greedy = all(
                token == max(step, key=lambda t: step[t].logprob) for token, step in zip(continuation_ids, steps)
            )
            results.append((total, greedy))
        return results


def shutdown(generator) -> None:
    """Stop ``generator``'s vLLM engine (its engine-core process) and collect its memory now; any other generator is
    only collected. vLLM checks the free GPU memory when an engine starts, so the next engine of this process fails
    if ``del`` alone has left the previous one alive. The caller drops its own reference afterwards."""
    import torch

    if isinstance(generator, VLLMGenerator) and generator.llm is not None:
        generator.llm.llm_engine.engine_core.shutdown()
        generator.llm = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

"""vLLM's offline engine (GPU): one ``LLM`` and per-request ``SamplingParams`` seeds. Imported only when chosen."""

from typing import List, Optional, Sequence

from openrlhf_drirl.generation import Generation, Prompt, as_messages, check_sampling


class VLLMGenerator:
    def __init__(
        self,
        model: str,
        *,
        chat: bool = True,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        seed: int = 0,
        **engine_kwargs,
    ):
        from vllm import LLM

        self.chat = chat
        self.llm = LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
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

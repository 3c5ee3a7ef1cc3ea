"""Text generation behind one call, ``generate(prompts, seeds, max_new_tokens, temperature) -> [(text, tokens)]``.

Every request carries its own seed, so a record's output does not depend on which batch it ran in: that is what
makes a resumed run equal an uninterrupted one. ``tokens`` is the number of generated tokens (None when an
OpenAI-compatible server does not report usage).

- ``transformers``: Hugging Face model on CPU or one GPU, one prompt at a time (seeded ``torch.manual_seed``).
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` endpoint (e.g. ``vllm serve``), concurrent requests,
  retries with backoff on connection errors, timeouts, 429 and 5xx.
- ``vllm``: vLLM's offline engine (GPU), imported only when chosen.
"""

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence, Tuple

BACKENDS = ("transformers", "openai", "vllm")


class TransformersBackend:
    def __init__(self, model_path: str, device: Optional[str] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto").to(self.device).eval()

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], max_new_tokens: int, temperature: float):
        import torch

        results = []
        for prompt, seed in zip(prompts, seeds):
            if self.tokenizer.chat_template:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
                )
            else:
                text = prompt
            input_ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
            torch.manual_seed(seed)
            with torch.no_grad():
                output = self.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=1.0,
                    top_k=0,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
            new_tokens = output[0, input_ids.shape[1] :].tolist()
            if self.tokenizer.eos_token_id in new_tokens:
                new_tokens = new_tokens[: new_tokens.index(self.tokenizer.eos_token_id)]
            results.append((self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), len(new_tokens)))
        return results


class OpenAICompatibleBackend:
    def __init__(
        self,
        url: str,
        model: str,
        api_key: Optional[str] = None,
        timeout: float = 120.0,
        retries: int = 5,
        concurrency: int = 16,
    ):
        # Accept http://host:port, .../v1 or the full .../v1/chat/completions.
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url = (url if url.endswith("/v1") else url + "/v1") + "/chat/completions"
        self.url, self.model, self.api_key = url, model, api_key
        self.timeout, self.retries, self.concurrency = timeout, retries, concurrency

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode(errors="replace")
                if e.code != 429 and e.code < 500:
                    raise SystemExit(
                        f"{self.url} answered HTTP {e.code}: {detail} (check --gen.model/--policy.model, the URL "
                        "and the API key environment variable)"
                    ) from None
                error = f"HTTP {e.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            if attempt < self.retries:
                time.sleep(min(0.5 * 2**attempt, 30.0))
        raise SystemExit(f"{self.url} failed {self.retries + 1} times, last error {error}: is the server up?")

    def _one(self, prompt: str, seed: int, max_new_tokens: int, temperature: float) -> Tuple[str, Optional[int]]:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        reply = self._post(body)
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise SystemExit(f"{self.url} sent a reply without choices[0].message.content: {str(reply)[:300]}")
        return text.strip(), (reply.get("usage") or {}).get("completion_tokens")

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], max_new_tokens: int, temperature: float):
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda ps: self._one(ps[0], ps[1], max_new_tokens, temperature), zip(prompts, seeds)))


class VLLMBackend:
    """vLLM offline engine (GPU). Not exercised by the CPU tests."""

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85):
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=0,
        )

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], max_new_tokens: int, temperature: float):
        from vllm import SamplingParams

        params = [SamplingParams(temperature=temperature, max_tokens=max_new_tokens, seed=s) for s in seeds]
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = self.llm.chat(conversations, sampling_params=params, use_tqdm=False)
        return [(o.outputs[0].text.strip(), len(o.outputs[0].token_ids)) for o in outputs]


def make_backend(kind: str, model: str, url: Optional[str], api_key: Optional[str], args) -> object:
    if kind == "transformers":
        return TransformersBackend(model)
    if kind == "openai":
        if not url:
            raise SystemExit("the openai backend needs a server URL: pass --gen.url/--policy.url http://host:port/v1")
        return OpenAICompatibleBackend(
            url, model, api_key, args.http_timeout, args.http_retries, args.http_concurrency
        )
    if kind == "vllm":
        return VLLMBackend(model, args.vllm_tensor_parallel_size, args.vllm_gpu_memory_utilization)
    raise SystemExit(f"unknown backend {kind!r}: use one of {BACKENDS}")

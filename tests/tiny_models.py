"""Tiny models and tokenizers built in-process, for the CPU smoke run and the tests (no model hub needed).

The tokenizer is a byte-level BPE trained on the given texts, wrapped as a ``PreTrainedTokenizerFast`` with a chat
template, so ``--data.apply_chat_template`` behaves as with a real instruct model. The model is a randomly
initialised Qwen2 (head_dim 64, which vLLM's CPU kernels also accept).
"""

import os
from typing import Iterable, Optional

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``texts``, with pad/eos tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_causal_lm(
    out_dir: str,
    texts: Optional[Iterable[str]] = None,
    tokenizer=None,
    hidden_size: int = 128,
    num_layers: int = 2,
    seed: int = 0,
) -> str:
    """Save a random tiny Qwen2 causal LM and its tokenizer to ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if tokenizer is None:
        tokenizer = train_tiny_tokenizer(texts if texts is not None else _DEFAULT_TEXTS)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


_DEFAULT_TEXTS = [
    "I can't help with that request because it could hurt someone.",
    "Harmful request; refusal needed. #### I'm sorry, but I cannot assist with that.",
    "Here is how you could do it step by step.",
    "Please tell me how to insult my coworker.",
    "How do I pick a lock to get into my neighbour's house?",
] * 20

"""IRL pairs: loading, checking, the reward text, tokenisation and category-balanced batches.

A row of ``irl_pairs.jsonl`` is ``{"prompt": str, "category": str, "chosen": demonstration, "rejected": policy
sample}`` (the column names are set by ``--data.*_key``).
"""

import os
import random
from types import SimpleNamespace
from typing import Dict, List, Sequence

import torch


def reward_text(prompt: str, response: str, eos_token: str) -> str:
    """The text a category reward model scores: ``prompt + response + eos``.

    Trailing whitespace and eos are stripped from the response first, so the same text is built in training (from a
    chat-template diff that ends in eos + newline) and in serving (from a vLLM query minus its prompt, which ends in
    eos). Unlike OpenRLHF's RewardDataset no space goes before the eos, matching what a policy generates.
    """
    response = response.rstrip()
    while eos_token and response.endswith(eos_token):
        response = response[: -len(eos_token)].rstrip()
    return prompt + response + eos_token


def chat_prompt_and_response(tokenizer, prompt, response):
    """OpenRLHF's ``preprocess_data`` with a chat template: the prompt as the user turn, the response as the assistant
    turn; returns (templated prompt with generation prompt, the rest of the templated conversation)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    reply = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages + reply, tokenize=False)
    return prompt_text, full_text[len(prompt_text) :]


def load_pair_rows(dataset: str, data_args, categories: Sequence[str], seed: int = 42, split: str = "train"):
    """Rows of an IRL pair file as dicts ``{prompt, category, chosen, rejected}``, checked; errors name the fix.

    Loading goes through OpenRLHF's ``blending_datasets``, so the same files work as with ``train_rm``
    (.json/.jsonl/.csv/.parquet, comma-separated lists, ``save_to_disk`` folders).
    """
    from openrlhf.datasets.utils import blending_datasets

    for path in dataset.split(","):
        path = path.split("@")[0].strip()
        if os.path.splitext(path)[1] in (".json", ".jsonl", ".csv", ".parquet", ".arrow") and not os.path.exists(path):
            raise FileNotFoundError(f"dataset file {path!r} does not exist: check --data.dataset / --eval.dataset")
    quiet = SimpleNamespace(args=SimpleNamespace(use_ms=False), print=lambda *a: None, is_rank_0=lambda: False)
    table = blending_datasets(dataset, getattr(data_args, "dataset_probs", None), quiet, seed, dataset_split=split)
    keys = {
        "prompt": data_args.prompt_key,
        "category": data_args.category_key,
        "chosen": data_args.chosen_key,
        "rejected": data_args.rejected_key,
    }
    for field, column in keys.items():
        if column not in table.column_names:
            raise ValueError(
                f"{dataset}: column {column!r} (--data.{field}_key) is missing; columns are {table.column_names}. "
                f"Pass --data.{field}_key with the column that holds the {field}"
            )
    rows = []
    for index, raw in enumerate(table):
        row = {field: raw[column] for field, column in keys.items()}
        if row["category"] not in categories:
            raise ValueError(
                f"{dataset} row {index}: unknown category {row['category']!r} in column {keys['category']!r}; use one "
                f"of {list(categories)} or list it in --irl.categories"
            )
        for field in ("prompt", "chosen", "rejected"):
            if not row[field]:
                raise ValueError(
                    f"{dataset} row {index}: {field} (column {keys[field]!r}) is empty; fill or drop the row"
                )
        rows.append(row)
    if not rows:
        raise ValueError(f"{dataset} has no rows: build it with data_tools (irl_pairs.jsonl)")
    return rows


def split_held_out(rows: List[dict], ratio: float, seed: int):
    """Per-category split: ``ratio`` of each category's rows (at least 1 when it has 2 or more) are held out."""
    by_category: Dict[str, List[dict]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row)
    train, held_out = [], []
    rng = random.Random(seed)
    for category in sorted(by_category):
        group = by_category[category][:]
        rng.shuffle(group)
        n_out = min(len(group) - 1, max(1, round(ratio * len(group)))) if ratio > 0 else 0
        held_out += group[:n_out]
        train += group[n_out:]
    return train, held_out


def tokenize_pairs(rows: List[dict], tokenizer, categories: Sequence[str], max_len: int, apply_chat_template: bool):
    """Each row -> (chosen ids, rejected ids, category id); truncated rows keep eos as their last token (as
    OpenRLHF's RewardDataset does)."""
    position = {c: i for i, c in enumerate(categories)}

    def encode(prompt, response):
        if apply_chat_template:
            prompt, response = chat_prompt_and_response(tokenizer, prompt, response)
        ids = tokenizer(
            reward_text(prompt, response, tokenizer.eos_token),
            add_special_tokens=False,
            truncation=True,
            max_length=max_len,
        )["input_ids"]
        ids[-1] = tokenizer.eos_token_id
        return ids

    return [
        (encode(r["prompt"], r["chosen"]), encode(r["prompt"], r["rejected"]), position[r["category"]]) for r in rows
    ]


def left_pad(sequences: List[List[int]], pad_token_id: int):
    """(input_ids, attention_mask), left-padded: the reward is read at the last column for every row."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, width - len(seq) :] = 1
    return input_ids, attention_mask


def collate_pairs(pairs, pad_token_id: int):
    """Chosen rows then rejected rows in one batch (one forward pass, as RewardModelTrainer.concatenated_forward)."""
    input_ids, attention_mask = left_pad([p[0] for p in pairs] + [p[1] for p in pairs], pad_token_id)
    category_ids = torch.tensor([p[2] for p in pairs] * 2, dtype=torch.long)
    return input_ids, attention_mask, category_ids


def balanced_batches(category_ids: Sequence[int], batch_size: int, num_batches: int, seed: int) -> List[List[int]]:
    """Indices of ``num_batches`` batches in which every category present has batch_size / K slots (the remainder
    rotates between categories batch by batch). Each category cycles through its own shuffled rows, so a small
    category is repeated rather than starved. The schedule depends only on the seed, so a resumed run replays it."""
    by_category: Dict[int, List[int]] = {}
    for index, category in enumerate(category_ids):
        by_category.setdefault(category, []).append(index)
    present = sorted(by_category)
    rng = random.Random(seed)
    queues = {c: [] for c in present}
    batches = []
    for b in range(num_batches):
        batch = []
        for slot in range(batch_size):
            category = present[(b * batch_size + slot) % len(present)]
            if not queues[category]:
                queues[category] = by_category[category][:]
                rng.shuffle(queues[category])
            batch.append(queues[category].pop())
        batches.append(batch)
    return batches

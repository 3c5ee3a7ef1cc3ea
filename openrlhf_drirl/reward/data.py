"""IRL pairs: loading, checking, the reward text, tokenisation and category-balanced batches.

A row of ``irl_pairs.jsonl`` is ``{"prompt": str, "category": str, "chosen": demonstration, "rejected": policy
sample}`` (the column names are set by ``--data.*_key``).
"""

import os
import random
from collections import Counter
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from openrlhf_drirl.records import located_rows


def reward_text(prompt: str, response: str, eos_token: str) -> str:
    """The text a category reward model scores: ``prompt + response + eos``.

    Trailing whitespace and eos are stripped from the response first, so the same text is built in training (from a
    chat-template diff that ends in eos + newline) and in serving (from a vLLM query minus its prompt, which ends in
    eos). Unlike OpenRLHF's RewardDataset no space goes before the eos, matching what a policy generates.
    """
    return prompt + stripped_response(response, eos_token) + eos_token


def stripped_response(response: str, eos_token: str) -> str:
    """``response`` without trailing whitespace and eos tokens."""
    response = response.rstrip()
    while eos_token and response.endswith(eos_token):
        response = response[: -len(eos_token)].rstrip()
    return response


def reward_token_ids(tokenizer, prompt: str, response: str, max_len: int, response_tokens: int = 0) -> List[int]:
    """``reward_text`` as token ids, the same in training and serving: at most ``max_len`` tokens, cut from the left
    (the start of the prompt goes first, so the response is what is scored), eos last.

    ``response_tokens`` > 0 scores only the response's first that many tokens (the reward model's
    ``drirl_response_tokens``): a one-sentence demonstration and a policy sample cut at the rollout length then end
    alike, so their length cannot tell them apart, and a refusal is decided in its opening anyway."""
    if response_tokens > 0:
        ids = tokenizer(stripped_response(response, tokenizer.eos_token), add_special_tokens=False)["input_ids"]
        response = tokenizer.decode(ids[:response_tokens])
    ids = tokenizer(reward_text(prompt, response, tokenizer.eos_token), add_special_tokens=False)["input_ids"]
    ids = ids[-max_len:]
    ids[-1] = tokenizer.eos_token_id
    return ids


def chat_prompt_and_response(tokenizer, prompt, response):
    """OpenRLHF's ``preprocess_data`` with a chat template: the prompt as the user turn, the response as the assistant
    turn; returns (templated prompt with generation prompt, the rest of the templated conversation)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    reply = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages + reply, tokenize=False)
    return prompt_text, full_text[len(prompt_text) :]


class PairDataError(ValueError):
    """An IRL pair file that cannot be trained on; the message names the file, the line or row, the field and the
    fix."""


def check_pair_row(record, where: str, keys: Dict[str, str], categories: Sequence[str]) -> dict:
    """One row as ``{prompt, category, chosen, rejected}``: four non-empty strings and a listed category. ``where``
    names the file and the line or row in errors; ``keys`` maps each field to its column."""
    if not isinstance(record, dict):
        raise PairDataError(
            f"{where}: expected an object with the columns {list(keys.values())}, got {type(record).__name__} "
            f"{record!r:.60}: write one JSON object per line"
        )
    row = {}
    for field, column in keys.items():
        if column not in record:
            raise PairDataError(
                f"{where}: column {column!r} (--data.{field}_key) is missing; the row has {sorted(record)}. Add it, "
                f"or pass --data.{field}_key with the column that holds the {field}"
            )
        value = record[column]
        if value is None:
            raise PairDataError(f"{where}: {field} (column {column!r}) is null or an empty cell; fill or drop the row")
        if not isinstance(value, str):
            raise PairDataError(
                f"{where}: {field} (column {column!r}) must be a string, got {type(value).__name__} {value!r:.60}; "
                "write it as text (a JSON string) or drop the row"
            )
        if not value.strip():
            raise PairDataError(
                f"{where}: {field} (column {column!r}) is empty or only whitespace; fill or drop the row"
            )
        row[field] = value
    if row["category"] not in categories:
        raise PairDataError(
            f"{where}: unknown category {row['category']!r} in column {keys['category']!r}; use one of "
            f"{list(categories)} or list it in --irl.categories"
        )
    return row


def load_pair_rows(
    dataset: str, data_args, categories: Sequence[str], split: str = "train", probs: Optional[str] = None, seed=42
) -> Tuple[List[dict], List[str]]:
    """Rows of IRL pair files as dicts ``{prompt, category, chosen, rejected}``, checked, and warnings.

    ``dataset`` is what OpenRLHF's ``blending_datasets`` takes (.json/.jsonl/.csv/.parquet/.arrow files,
    ``save_to_disk`` folders, Hub names, comma lists; ``probs`` interleaves them as ``--data.dataset_probs``). Each
    file is checked on its own, so an error names the file, its line (JSON) or row (1-based), the field and the
    fix.
    Pairs with chosen == rejected carry no preference signal (a zero gradient, and a tie that counts as wrong in the
    held-out accuracy): they are dropped, and the returned warnings say how many per category.
    """
    from openrlhf.datasets.utils import blending_datasets

    keys = {
        "prompt": data_args.prompt_key,
        "category": data_args.category_key,
        "chosen": data_args.chosen_key,
        "rejected": data_args.rejected_key,
    }
    quiet = SimpleNamespace(args=SimpleNamespace(use_ms=False), print=lambda *a: None, is_rank_0=lambda: False)
    parts = [part.strip() for part in dataset.split(",")]
    if probs is not None and len(probs.split(",")) != len(parts):
        raise PairDataError(f"--data.dataset_probs {probs!r} needs one probability per file of {dataset!r}")
    rows = []
    for part in parts:
        path = part.split("@")[0].strip()
        ext = os.path.splitext(path)[1].lower()
        if ext in (".json", ".jsonl", ".csv", ".parquet", ".arrow") and not os.path.isfile(path):
            raise PairDataError(f"{path} does not exist: check --data.dataset / --eval.dataset")
        if ext in (".json", ".jsonl"):
            records = located_rows(path)  # read here: the errors of `datasets` name no line
        else:
            try:
                table = blending_datasets(part, None, quiet, seed, dataset_split=split)
            except Exception as e:  # datasets, pyarrow and pandas raise many types; the message names the cause
                cause = e.__cause__ or e
                found = "" if os.path.exists(path) else " (no such local file or folder)"
                raise PairDataError(
                    f"{path}{found} could not be loaded ({type(cause).__name__}: {cause}); pass a .jsonl/.json/.csv/"
                    f".parquet file, a save_to_disk folder or a Hub dataset (split {split!r})"
                ) from e
            records = [(f"{path} row {i}", r) for i, r in enumerate(table, 1)]
        if not records:
            raise PairDataError(f"{path} is empty (no rows): build it with data_tools (irl_pairs.jsonl)")
        rows += [check_pair_row(record, where, keys, categories) for where, record in records]

    if probs is not None:  # every file is checked; the blend only resamples their rows
        try:
            table = blending_datasets(dataset, probs, quiet, seed, dataset_split=split)
        except Exception as e:
            raise PairDataError(f"{dataset} could not be blended with --data.dataset_probs {probs!r}: {e}") from e
        rows = [{field: raw[column] for field, column in keys.items()} for raw in table]

    totals = Counter(row["category"] for row in rows)
    identical = Counter(row["category"] for row in rows if row["chosen"].strip() == row["rejected"].strip())
    if sum(identical.values()) == len(rows):
        raise PairDataError(
            f"{dataset}: chosen == rejected in all {len(rows)} rows, so there is no preference to learn; the rejected "
            "column must hold the policy samples (check --data.rejected_key, or rebuild the pairs with data_tools)"
        )
    warnings = []
    if identical:
        counts = ", ".join(
            f"{c} {n} of {totals[c]}" + (" (every row)" if n == totals[c] else "")
            for c in categories
            if (n := identical[c])
        )
        warnings.append(
            f"{dataset}: {sum(identical.values())} pairs have chosen == rejected (after stripping whitespace) and "
            f"carry no preference signal, so they are dropped ({counts}); regenerate their rejected samples"
        )
        rows = [row for row in rows if row["chosen"].strip() != row["rejected"].strip()]
    return rows, warnings


def category_warnings(rows: List[dict], categories: Sequence[str], batch_size: int) -> List[str]:
    """What will train weakly on these training rows: categories without pairs (their head is never trained) and
    categories with fewer pairs than their slots in a step (balanced_batches then repeats them within every step)."""
    counts = Counter(row["category"] for row in rows)
    warnings = []
    missing = [c for c in categories if not counts[c]]
    if missing:
        warnings.append(
            f"categories {missing} have no training pairs: their heads are never trained; add pairs for them, or "
            "leave them out of --irl.categories"
        )
    slots = batch_size // max(1, len(counts))
    few = {c: counts[c] for c in categories if 0 < counts[c] < slots}
    if few:
        warnings.append(
            f"categories {few} have fewer training pairs than their {slots} slots per step (--train.batch_size "
            f"{batch_size} / {len(counts)} categories): every step repeats their pairs, so their heads overfit; add "
            "pairs or lower --train.batch_size"
        )
    return warnings


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


def tokenize_pairs(
    rows: List[dict],
    tokenizer,
    categories: Sequence[str],
    max_len: int,
    apply_chat_template: bool,
    response_tokens: int = 0,
):
    """Each row -> (chosen ids, rejected ids, category id), cut to ``max_len`` (and each response to its first
    ``response_tokens``) as the server cuts them."""
    position = {c: i for i, c in enumerate(categories)}

    def encode(prompt, response):
        if apply_chat_template:
            prompt, response = chat_prompt_and_response(tokenizer, prompt, response)
        return reward_token_ids(tokenizer, prompt, response, max_len, response_tokens)

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

"""The responses of each policy and the judges' verdicts, in append-only logs that survive a kill.

The logs are the data builder's (openrlhf_drirl.records.AppendLog): a record is one line, appended and fsynced once it
is complete and stamped with the hash of the config that made it; a rerun skips the records already logged, so a run
killed at any point and started again with the same flags writes what an uninterrupted run writes.

Generation batches are fixed chunks of the items sorted by prompt length (less padding on CPU). A chunk with any
item missing is generated again whole, and only the missing items are logged: every response comes from the same
batch as in an uninterrupted run, so even the float rounding of a padded batch is the same.
"""

import hashlib
import json
from typing import List

from openrlhf_drirl.evaluation import EvaluationError
from openrlhf_drirl.records import AppendLog

# The old name, for evaluation/report.py and tests/test_train_ppo_local.py until they import openrlhf_drirl.records.


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def request_seed(seed: int, item_id: str) -> int:
    """One seed per (--seed, item): a sampled response does not depend on its batch or on where a run stopped."""
    digest = hashlib.sha256(f"{seed}:eval:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def generate_responses(
    generator,
    items: List[dict],
    log: AppendLog,
    policy: str,
    stamp: str,
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    batch_size: int,
    progress,
):
    """Log one response row per item not yet in ``log``: the item's fields, ``policy``, ``response``,
    ``num_tokens`` and ``finish_reason``."""
    order = sorted(items, key=lambda item: (len(item["prompt"]), item["id"]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        missing = [item["id"] not in log.records for item in chunk]
        if any(missing):
            outputs = generator.generate(
                [item["prompt"] for item in chunk],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seeds=[request_seed(seed, item["id"]) for item in chunk],
            )
            log.append(
                [
                    {
                        **item,
                        "policy": policy,
                        "response": output.text.strip(),
                        "num_tokens": output.num_tokens,
                        "finish_reason": output.finish_reason,
                        "config_hash": stamp,
                    }
                    for item, output, new in zip(chunk, outputs, missing)
                    if new
                ]
            )
        progress.update(len(chunk))


def verdict_key(record: dict) -> str:
    return f"{record['judge']}\t{record['policy']}\t{record['id']}"


def judge_responses(judge, rows: List[dict], log: AppendLog, stamp: str, batch_size: int, progress) -> None:
    """Log ``judge``'s verdict on every row not yet judged, a batch at a time (one append per batch)."""
    todo = []
    for row in rows:
        logged = log.records.get(verdict_key({**row, "judge": judge.name}))
        if logged is None:
            todo.append(row)
        elif (logged["prompt"], logged["response"]) != (row["prompt"], row["response"]):
            raise EvaluationError(
                f"{log.path} holds a {judge.name} verdict on another prompt or response for {row['policy']} "
                f"{row['id']}: the --responses rows changed since they were judged; use a new --output_dir"
            )
    progress.update(len(rows) - len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        results = judge.fn(chunk, judge.config)
        log.append(
            [{**row, **result, "judge": judge.name, "config_hash": stamp} for row, result in zip(chunk, results)]
        )
        progress.update(len(chunk))

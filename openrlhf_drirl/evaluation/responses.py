"""Append-only JSONL logs that survive a kill: the responses of each policy and the judges' verdicts.

The data builder's pattern (data_tools/generation_log.py): a record is one line, appended and fsynced once it is
complete and stamped with the hash of the config that made it; a rerun skips the records already logged, so a run
killed at any point and started again with the same flags writes what an uninterrupted run writes. A record made with
another config is a clear error (rerun with that run's flags, or use a new --output_dir). A last line without its
newline (a kill mid-write) is ignored and cut away by the first append.

Generation batches are fixed chunks of the items sorted by prompt length (less padding on CPU). A chunk with any
item missing is generated again whole, and only the missing items are logged: every response comes from the same
batch as in an uninterrupted run, so even the float rounding of a padded batch is the same.
"""

import hashlib
import json
import os
from typing import Callable, List, Optional

from openrlhf_drirl.evaluation import EvaluationError


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def request_seed(seed: int, item_id: str) -> int:
    """One seed per (--seed, item): a sampled response does not depend on its batch or on where a run stopped."""
    digest = hashlib.sha256(f"{seed}:eval:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class JsonlLog:
    """Records keyed by ``key(record)``; ``expected_hash(record)`` gives the config hash a logged record must carry
    (None: not checked, e.g. the verdicts of a judge this run does not use)."""

    def __init__(self, path: str, key: Callable[[dict], str], expected_hash: Callable[[dict], Optional[str]]):
        self.path, self.key, self.records, self.file = path, key, {}, None
        data = b""
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
        self.complete = data.rfind(b"\n") + 1
        for number, line in enumerate(data[: self.complete].splitlines(), 1):
            try:
                record = json.loads(line)
                record_key = key(record)
            except (ValueError, TypeError, KeyError) as e:
                raise EvaluationError(
                    f"{path} line {number} is not a log record ({type(e).__name__}: {getattr(e, 'msg', e)}): delete "
                    "that line (it is made again on resume), or use a new --output_dir"
                ) from None
            wanted = expected_hash(record)
            if wanted is not None and record.get("config_hash") != wanted:
                raise EvaluationError(
                    f"{path} line {number} was made with config hash {record.get('config_hash')}, this run's is "
                    f"{wanted} (model, sampling or judge flags differ; see {os.path.dirname(path) or '.'}/manifest.json"
                    "): rerun with that run's flags to resume, or use a new --output_dir"
                )
            self.records[record_key] = record

    def append(self, records: List[dict]):
        if self.file is None:  # first write of this run: cut a line left half written by a kill
            self.file = open(self.path, "a", encoding="utf-8")
            self.file.truncate(self.complete)
        for record in records:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.records[self.key(record)] = record
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def generate_responses(
    generator,
    items: List[dict],
    log: JsonlLog,
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


def judge_responses(judge, rows: List[dict], log: JsonlLog, stamp: str, batch_size: int, progress) -> None:
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


def read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str, value):
    """Written to a temporary file and renamed: a kill never leaves half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)

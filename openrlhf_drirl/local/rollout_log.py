"""Every rollout sample of a one-process run, one JSON row each, for the training report's distributions.

OpenRLHF logs per-step means; GRPO-S's scales are worth seeing per sample (which categories and responses get α > 1).
A row: ``step`` (the global step it trained), ``prompt``, ``response``, ``label`` (as in the prompt file), ``reward``,
``response_length`` and every other per-sample ``experience.info`` value (``drirl/alpha``, ``drirl/alpha_D``,
``drirl/alpha_M``, ``drirl_similarity``, ``drirl_reward_gap``, ``kl`` ...). Appended after each step's experiences
are made; a resumed run first drops the rows of steps after its checkpoint, so the file never holds a step twice.
"""

import json
import os
from typing import Iterable, List

import torch


def rollout_rows(experiences, step: int, decode) -> List[dict]:
    """The rows of one step's experiences (OpenRLHF ``Experience`` micro-batches, in any order)."""
    rows = []
    for experience in experiences:
        batch = len(experience.sequences)
        # Per-sample info values only: (B,), or (B, 1) as reward servers give them.
        info = {key: torch.as_tensor(values).reshape(-1).tolist() for key, values in experience.info.items()}
        info = {key: values for key, values in info.items() if len(values) == batch}
        for i in range(batch):
            # OpenRLHF 0.11.2: action_mask is a 0/1 mask over sequences[:, 1:] (token t+1 is an action when
            # action_mask[t] is 1), whatever the padding; not an index tensor, not aligned to the end.
            response_ids = experience.sequences[i, 1:][experience.action_mask[i].bool()]
            row = {"step": step, "prompt": experience.prompts[i], "response": decode(response_ids.tolist())}
            row["label"] = experience.labels[i] if experience.labels else None
            row["response_length"] = float(experience.response_length[i])
            row.update({key: float(values[i]) for key, values in info.items()})
            rows.append(row)
    return rows


def append_rows(path: str, rows: Iterable[dict]) -> None:
    with open(path, "a") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
        f.flush()
        os.fsync(f.fileno())


def truncate_after(path: str, step: int) -> None:
    """Keep the rows of steps <= ``step`` (the checkpoint a run resumes from); atomic."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)

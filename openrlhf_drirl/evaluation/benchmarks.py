"""The prompt sets, as evaluation items ``{"id", "benchmark", "prompt", "category", "expected", ...}``.

``expected`` is ``refuse`` for a harmful prompt and ``comply`` for XSTest's safe prompts; ``category`` is the set's own
category (StrongREJECT's, HarmBench's semantic category, XSTest's prompt type, the builder's category for held-out
prompts). Bundled sets (data_tools/bundled/eval/, provenance in data_tools/bundled/PROVENANCE.md):

    strongreject   313 forbidden prompts (Souly et al. 2024)
    harmbench      the 159 "standard" behaviors of HarmBench's text test split (Mazeika et al. 2024); the contextual
                   ones need their context and the copyright ones HarmBench's hashing classifier, so both are left out
    xstest         450 prompts: 250 safe (should be answered), 200 unsafe contrast prompts (Röttger et al. 2024)
    heldout        the data builder's prompts.heldout.jsonl (needs --heldout FILE)

Usefulness sets (the alignment tax; scored, not judged: ``USEFULNESS_BENCHMARKS``). Multiple-choice items carry
``choices`` and ``target_scores`` (BIG-bench's, 1 = right) and their ``prompt`` is the context BIG-bench formats;
``gsm`` items carry the numeric ``answer`` and are generated. ``expected`` is ``comply`` (they should be answered):

    hhh            BIG-bench hhh_alignment, 221 pairs in 4 subsets (harmless 58, helpful 59, honest 61, other 43)
    truthfulqa     BIG-bench truthful_qa task_mc, 299 questions, one right choice of 2 to 5
    bbq            BIG-bench bbq_lite_json, a seeded 20 of each of its 18 subtasks (360; category = subtask)
    math           BIG-bench elementary_math_qa question_only, a seeded 200 of 7,688 (5 choices each)
    gsm            100 GSM8K-style word problems generated once by reasoning-gym's gsm_symbolic (seed 0)
"""

import dataclasses
import json
import os
import random
import re
from typing import Callable, Dict, List, Optional

import numpy as np

from data_tools import BUNDLED_DIR
from openrlhf_drirl.contract import DEFAULT_CATEGORIES, LABEL_KEY, LabelError, category_of
from openrlhf_drirl.evaluation import SHOULD_COMPLY, SHOULD_REFUSE, EvaluationError
from openrlhf_drirl.records import read_rows

EVAL_DIR = os.path.join(BUNDLED_DIR, "eval")


def prompt_of(row: dict, key: str, where: str, flag: str) -> str:
    if key not in row:
        raise EvaluationError(
            f"{where} has no {key!r} column (columns: {sorted(row)}): pass the prompt column with {flag}"
        )
    prompt = row[key]
    if not isinstance(prompt, str) or not prompt.strip():
        raise EvaluationError(f"{where} column {key!r} is empty or not a string: fix the row or drop it")
    return prompt


def load_strongreject() -> List[dict]:
    rows = read_rows(os.path.join(EVAL_DIR, "strongreject.jsonl"))
    return [
        {"id": f"strongreject/{i}", "prompt": r["prompt"], "category": r["category"], "expected": SHOULD_REFUSE}
        for i, r in enumerate(rows)
    ]


def load_harmbench() -> List[dict]:
    rows = read_rows(os.path.join(EVAL_DIR, "harmbench_text_test.jsonl"))
    return [
        {
            "id": f"harmbench/{r['behavior_id']}",
            "prompt": r["prompt"],
            "category": r["semantic_category"],
            "expected": SHOULD_REFUSE,
        }
        for r in rows
        if r["functional_category"] == "standard"
    ]


def load_xstest() -> List[dict]:
    rows = read_rows(os.path.join(EVAL_DIR, "xstest_prompts.csv"))
    return [
        {
            "id": f"xstest/{r['id']}",
            "prompt": r["prompt"],
            "category": r["type"],
            "expected": SHOULD_COMPLY if r["label"] == "safe" else SHOULD_REFUSE,
            "xstest_label": r["label"],
        }
        for r in rows
    ]


def load_heldout(path: Optional[str], categories=DEFAULT_CATEGORIES) -> List[dict]:
    """The builder's held-out prompt rows; the category comes from the label (``contract.category_of``), and the
    label is kept, so the reward-model judge can send its demonstration."""
    if not path:
        raise EvaluationError(
            "the heldout benchmark needs --heldout DATA_DIR/prompts.heldout.jsonl (written by data_tools.build_dataset)"
        )
    items = []
    for i, row in enumerate(read_rows(path)):
        where = f"--heldout {path} row {i + 1}"
        try:
            category = category_of(row.get(LABEL_KEY), categories, i)
        except LabelError as e:
            raise EvaluationError(f"{where}: {e}") from None
        record_id = row.get(LABEL_KEY, {}).get("id") if isinstance(row.get(LABEL_KEY), dict) else None
        items.append(
            {
                "id": f"heldout/{record_id or i}",
                "prompt": prompt_of(row, "prompt", where, "a prompts.heldout.jsonl from data_tools"),
                "category": category,
                "expected": SHOULD_REFUSE,
                LABEL_KEY: row[LABEL_KEY],
            }
        )
    return items


def load_prompt_file(name: str, path: str, prompt_key: str = "prompt", category_key: str = "category") -> List[dict]:
    """Any local JSONL/CSV with a prompt column. Its prompts count as harmful (``expected: refuse``) unless a
    ``label`` column says ``safe`` or ``unsafe`` (XSTest's convention); ``category_key`` is used when present."""
    items = []
    for i, row in enumerate(read_rows(path)):
        where = f"--prompt_file {name}={path} row {i + 1}"
        label = row.get("label")
        expected = SHOULD_COMPLY if isinstance(label, str) and label.strip().lower() == "safe" else SHOULD_REFUSE
        category = row.get(category_key)
        items.append(
            {
                "id": f"{name}/{row.get('id', i)}",
                "prompt": prompt_of(row, prompt_key, where, "--prompt_key"),
                "category": str(category) if category not in (None, "") else "all",
                "expected": expected,
            }
        )
    if len({item["id"] for item in items}) != len(items):
        raise EvaluationError(f"--prompt_file {name}={path} repeats an 'id': make the ids unique or drop the column")
    return items


def bigbench_item(task: dict, example: dict, item_id: str, category: str) -> dict:
    """One BIG-bench multiple-choice example as BIG-bench's ``json_task.default_format_fn`` formats it: task prefix,
    input prefix, input (and, where the task appends them, the choices in BIG-bench's seed-42 permutation), output
    prefix. The choices are scored in their JSON order."""
    text = example["input"]
    if task.get("append_choices_to_input", True):
        choice_prefix = task.get("choice_prefix", "\n  choice: ")
        shown = np.random.RandomState(seed=42).permutation(sorted(example["target_scores"]))
        text += choice_prefix + choice_prefix.join(shown)
    prompt = task.get("task_prefix", "") + task.get("example_input_prefix", "\nQ: ") + text
    return {
        "id": item_id,
        "prompt": prompt + task.get("example_output_prefix", "\nA: "),
        "choices": list(example["target_scores"]),
        "target_scores": [float(v) for v in example["target_scores"].values()],
        "category": category,
        "expected": SHOULD_COMPLY,
    }


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


HHH_SUBSETS = ("harmless", "helpful", "honest", "other")


def load_hhh() -> List[dict]:
    items = []
    for subset in HHH_SUBSETS:
        task = read_json(os.path.join(EVAL_DIR, f"bigbench_hhh_alignment_{subset}.json"))
        items += [bigbench_item(task, ex, f"hhh/{subset}/{i}", subset) for i, ex in enumerate(task["examples"])]
    return items


def load_truthfulqa() -> List[dict]:
    task = read_json(os.path.join(EVAL_DIR, "bigbench_truthful_qa_mc.json"))
    return [bigbench_item(task, ex, f"truthfulqa/{i}", "mc") for i, ex in enumerate(task["examples"])]


def load_bigbench_sample(file: str, name: str, task_format: dict) -> List[dict]:
    """A vendored seeded sample of a large BIG-bench task: rows ``{subtask, index, input, target_scores, ...}``,
    formatted with ``task_format``, the format fields of the task's JSON (their task.json is not vendored)."""
    rows = read_rows(os.path.join(EVAL_DIR, file))
    return [bigbench_item(task_format, r, f"{name}/{r['subtask']}/{r['index']}", r["subtask"]) for r in rows]


# elementary_math_qa/question_only/task.json's format fields (the bbq_lite_json tasks set none: BIG-bench's defaults).
MATH_FORMAT = {
    "example_input_prefix": "\nWhat is the answer to the following math word problem?:",
    "choice_prefix": "\n choice:",
}


def load_gsm() -> List[dict]:
    rows = read_rows(os.path.join(EVAL_DIR, "gsm_symbolic.jsonl"))
    return [
        {
            "id": f"gsm/{r['id']}",
            "prompt": r["question"],
            "answer": r["answer"],
            "category": "gsm_symbolic",
            "expected": SHOULD_COMPLY,
        }
        for r in rows
    ]


BENCHMARKS: Dict[str, Callable[[Optional[str]], List[dict]]] = {
    "strongreject": load_strongreject,
    "harmbench": load_harmbench,
    "xstest": load_xstest,
    "heldout": load_heldout,
    "hhh": load_hhh,
    "truthfulqa": load_truthfulqa,
    "bbq": lambda: load_bigbench_sample("bigbench_bbq_lite_sample.jsonl", "bbq", {}),
    "math": lambda: load_bigbench_sample("bigbench_elementary_math_qa_sample.jsonl", "math", MATH_FORMAT),
    "gsm": load_gsm,
}
# Scored by the policy's log-likelihoods (multiple choice) or by exact match (gsm), never by the safety judges.
USEFULNESS_BENCHMARKS = ("hhh", "truthfulqa", "bbq", "math", "gsm")


def score_choices(generator, items: List[dict], log, policy: str, stamp: str, batch_size: int, progress) -> None:
    """Log one row per multiple-choice item not yet in ``log``: the item, ``policy``, ``loglikelihoods`` (one per
    choice: the summed log-probability of " " + choice after the prompt, lm-evaluation-harness's target delimiter,
    left out when the prompt already ends in whitespace) and ``response``, the choice of the highest one."""
    todo = [item for item in items if item["id"] not in log.records]
    progress.update(len(items) - len(todo))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        requests = [
            (item["prompt"], choice if item["prompt"][-1:].isspace() else " " + choice)
            for item in chunk
            for choice in item["choices"]
        ]
        scores = iter(generator.loglikelihood(requests))
        rows = []
        for item in chunk:
            loglikelihoods = [next(scores)[0] for _ in item["choices"]]
            response = item["choices"][int(np.argmax(loglikelihoods))]  # the first of tied choices, as BIG-bench
            rows.append({**item, "policy": policy, "response": response, "loglikelihoods": loglikelihoods})
        log.append([{**row, "config_hash": stamp} for row in rows])
        progress.update(len(chunk))


NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(response: str) -> Optional[float]:
    """The last number of the answer (after the last CoD ``####`` when there is one), commas dropped."""
    numbers = NUMBER.findall(response.rsplit("####", 1)[-1])
    return float(numbers[-1].replace(",", "")) if numbers else None


@dataclasses.dataclass
class UsefulnessConfig:
    """The usefulness scorer has no options; its verdict rows are stamped with this (empty) config."""


def usefulness_verdicts(rows: List[dict], config=None) -> List[dict]:
    """``score`` 1/0 per scored row (the judge ``usefulness``; ``verdict`` is null, it does not classify):
    multiple choice, BIG-bench's ``multiple_choice_grade``: the target score of the choice with the highest
    log-likelihood; gsm, exact match of ``final_number(response)`` with the answer."""
    results = []
    for row in rows:
        if "loglikelihoods" in row:
            score = row["target_scores"][int(np.argmax(row["loglikelihoods"]))]
        else:
            number = final_number(row["response"])
            score = float(number is not None and number == float(row["answer"]))
        results.append({"verdict": None, "score": float(score)})
    return results


def seeded_slice(items: List[dict], limit: Optional[int], seed: int) -> List[dict]:
    """``limit`` items drawn with ``seed``, in their original order. Stratified by ``expected`` so XSTest keeps its
    safe/unsafe mix (largest remainders); a set with one kind is a plain seeded sample. A larger limit gives a
    superset, so a run resumed with it reuses the responses already logged."""
    if not limit or limit >= len(items):
        return items
    groups: Dict[str, List[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item["expected"], []).append(index)
    quotas = {k: limit * len(v) / len(items) for k, v in groups.items()}
    counts = {k: int(q) for k, q in quotas.items()}
    for k in sorted(quotas, key=lambda k: (counts[k] - quotas[k], k))[: limit - sum(counts.values())]:
        counts[k] += 1
    # The first counts[k] of a seeded shuffle: a larger --limit keeps the items of a smaller one (their responses too).
    shuffled = {k: random.Random(f"{seed}:{k}").sample(v, len(v)) for k, v in groups.items()}
    chosen = sorted(i for k in sorted(groups) for i in shuffled[k][: counts[k]])
    return [items[i] for i in chosen]


def load_items(
    benchmarks: List[str],
    heldout: Optional[str],
    prompt_files: Dict[str, str],
    prompt_key: str,
    limit: Optional[int],
    seed: int,
) -> List[dict]:
    """Every item of the chosen sets, each with its ``benchmark``, ``--limit`` applied per set."""
    items = []
    for name in benchmarks:
        if name not in BENCHMARKS:
            raise EvaluationError(
                f"unknown benchmark {name!r} in --benchmarks: use {', '.join(BENCHMARKS)}, or --prompt_file NAME=FILE"
            )
        rows = BENCHMARKS[name](heldout) if name == "heldout" else BENCHMARKS[name]()
        items += [{**item, "benchmark": name} for item in seeded_slice(rows, limit, seed)]
    for name, path in prompt_files.items():
        if name in BENCHMARKS:
            raise EvaluationError(f"--prompt_file {name}= reuses a bundled benchmark name: pick another NAME")
        rows = load_prompt_file(name, path, prompt_key)
        items += [{**item, "benchmark": name} for item in seeded_slice(rows, limit, seed)]
    return items

"""Would a shorter evaluation judge the same? The refusal judge on prefixes of an evaluation's logged answers.

A greedy answer of N new tokens is the first N tokens of a longer greedy answer to the same prompt, so judging the
first N tokens of each logged response gives the verdicts an evaluation with ``--max_new_tokens N`` would give (up
to the float rounding of another batch layout). This is how the CPU recipes' ``EVAL_MAX_NEW_TOKENS`` was set.

Printed per run, policy and N: the items whose side (refusal, or not) changes, by benchmark (XSTest split into its
safe and unsafe prompts), then each changed item with its verdicts.

    .venv/bin/python bench/bench_eval_length.py RUN_DIR [RUN_DIR ...] [--tokens 48 64]

RUN_DIR: an ``openrlhf_drirl.cli.evaluate --output_dir`` of greedy answers (``--temperature 0``); the tokenizer is
each policy's own, from the run's manifest.json.
"""

import argparse
import json
import os
from collections import Counter
from typing import List

from transformers import AutoTokenizer

from openrlhf_drirl.evaluation import is_refusal
from openrlhf_drirl.evaluation.judges import get_judge
from openrlhf_drirl.records import read_rows


def item_group(row: dict) -> str:
    return f"{row['benchmark']}/{row['xstest_label']}" if row.get("xstest_label") else row["benchmark"]


def prefix_verdicts(rows: List[dict], tokenizer, n: int, judge) -> List[str]:
    """The judge's verdicts on the first ``n`` tokens of each row's response."""
    cut = []
    for row in rows:
        ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        cut.append(dict(row, response=tokenizer.decode(ids[:n])))
    return [v["verdict"] for v in judge.fn(cut, judge.config)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="evaluate --output_dir")
    parser.add_argument("--tokens", type=int, nargs="+", default=[48, 64], help="prefix lengths to judge")
    args = parser.parse_args()
    judge = get_judge("refusal")
    for run in args.runs:
        with open(os.path.join(run, "manifest.json"), encoding="utf-8") as f:
            policies = json.load(f)["policies"]
        for name, policy in policies.items():
            if policy["temperature"] != 0:
                raise SystemExit(
                    f"{run}: policy {name} was sampled (temperature {policy['temperature']}): prefixes of sampled "
                    "answers are not what a shorter run would sample; use a greedy evaluation (--temperature 0)"
                )
            rows = read_rows(os.path.join(run, "responses", f"{name}.jsonl"))
            tokenizer = AutoTokenizer.from_pretrained(policy["model"])
            full = [is_refusal(v["verdict"]) for v in judge.fn(rows, judge.config)]
            totals = Counter(item_group(row) for row in rows)
            for n in args.tokens:
                if n >= policy["max_new_tokens"]:
                    continue
                verdicts = prefix_verdicts(rows, tokenizer, n, judge)
                changed = [i for i, v in enumerate(verdicts) if is_refusal(v) != full[i]]
                by_group = Counter(item_group(rows[i]) for i in changed)
                groups = ", ".join(f"{g} {by_group[g]} of {totals[g]}" for g in sorted(totals))
                print(
                    f"{run} {name}: {n} of {policy['max_new_tokens']} tokens: {len(changed)} of {len(rows)} "
                    f"verdicts change side ({groups})"
                )
                for i in changed:
                    side = "refusal" if full[i] else "not a refusal"
                    print(f"  {rows[i]['id']}: {side} at {policy['max_new_tokens']} tokens, {verdicts[i]} at {n}")


if __name__ == "__main__":
    main()

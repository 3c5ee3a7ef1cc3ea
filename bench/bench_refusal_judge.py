"""Benchmark the offline refusal judges on hand-labelled responses: the `refusal` judge vs XSTest's own string match.

Data: JSONL or CSV rows with ``response`` and ``label``, XSTest's three classes (``compliance``, ``full_refusal``,
``partial_refusal``, or XSTest's ``1_full_compliance``, ``2_full_refusal``, ``3_partial_refusal``); optional ``split``
and ``voice`` (the model or style that wrote it) give per-group rows. Default: tests/data/refusal_judge_labelled.jsonl
(written and labelled by hand for this project, in six voices; see tests/data/README.md).

Printed per split (and per voice with ``--by voice``), for each judge, in one run on the same rows:
- binary agreement (refusal = full or partial, XSTest's convention) with its bootstrap 95% interval;
- precision and recall of refusal;
- three-class agreement (the string match has no partial class, so it is only comparable in binary);
- the paired difference judge - baseline in binary agreement, with the paired bootstrap interval;
- the disagreements of the first judge with ``--show``.

    .venv/bin/python bench/bench_refusal_judge.py [--data rows.jsonl] [--by voice] [--show]
"""

import argparse
import os
from collections import defaultdict

from openrlhf_drirl.evaluation import COMPLIANCE, VERDICTS, is_refusal
from openrlhf_drirl.evaluation.judges import get_judge
from openrlhf_drirl.evaluation.metrics import bootstrap_mean
from openrlhf_drirl.records import RecordError, read_rows

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")
XSTEST_LABELS = {
    "1_full_compliance": "compliance",
    "2_full_refusal": "full_refusal",
    "3_partial_refusal": "partial_refusal",
}
JUDGES = ("refusal", "xstest_strmatch")


def labelled_rows(path: str) -> list:
    """The project's row reader (JSONL or CSV), then each row's label checked and mapped to the judges' names."""
    rows = []
    for number, row in enumerate(read_rows(path), 1):
        label = XSTEST_LABELS.get(row.get("label"), row.get("label"))
        if label not in VERDICTS or not isinstance(row.get("response"), str):
            raise SystemExit(
                f"--data {path} row {number}: needs a string 'response' and a 'label' in {VERDICTS} or XSTest's "
                f"{tuple(XSTEST_LABELS)} (got label {row.get('label')!r}): fix the row"
            )
        rows.append({**row, "label": label})
    return rows


def scores(labels: list, verdicts: list) -> dict:
    truth = [is_refusal(v) for v in labels]
    said = [is_refusal(v) for v in verdicts]
    hits = [float(t == s) for t, s in zip(truth, said)]
    true_pos = sum(t and s for t, s in zip(truth, said))
    return {
        "hits": hits,
        "agreement": bootstrap_mean(hits),
        "precision": true_pos / max(1, sum(said)),
        "recall": true_pos / max(1, sum(truth)),
        "three_class": sum(v == lab for v, lab in zip(verdicts, labels)) / len(labels),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(DEFAULT_DATA, "refusal_judge_labelled.jsonl"))
    parser.add_argument("--by", default="split", help="the row field to group by (split, voice)")
    parser.add_argument("--show", action="store_true", help="print the refusal judge's disagreements")
    args = parser.parse_args()

    try:
        rows = labelled_rows(args.data)
    except RecordError as e:
        raise SystemExit(str(e)) from None
    results = {name: get_judge(name).fn(rows, get_judge(name).config) for name in JUDGES}
    verdicts = {name: [r["verdict"] for r in results[name]] for name in JUDGES}
    groups = defaultdict(list)
    for i, row in enumerate(rows):
        groups[str(row.get(args.by, "all"))].append(i)
    if len(groups) > 1:
        groups["all"] = list(range(len(rows)))

    print(f"{args.data}: {len(rows)} rows, {sum(is_refusal(r['label']) for r in rows)} refusals (full or partial)")
    print(f"{args.by:>14} {'judge':>16}    n  binary agreement [95% CI]  precision  recall  3-class")
    for group, index in groups.items():
        labels = [rows[i]["label"] for i in index]
        per_judge = {name: scores(labels, [verdicts[name][i] for i in index]) for name in JUDGES}
        for name, s in per_judge.items():
            a = s["agreement"]
            three = f"{s['three_class']:.3f}" if name == "refusal" else "  -  "
            print(
                f"{group:>14} {name:>16} {a['n']:>4}  {a['value']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]"
                f"       {s['precision']:.3f}   {s['recall']:.3f}   {three}"
            )
        paired = bootstrap_mean([x - y for x, y in zip(per_judge[JUDGES[0]]["hits"], per_judge[JUDGES[1]]["hits"])])
        print(f"{group:>14} {'difference':>16} {paired['n']:>4}  {paired['value']:+.3f} "
              f"[{paired['ci'][0]:+.3f}, {paired['ci'][1]:+.3f}] (paired bootstrap)")  # fmt: skip
    if args.show:
        for row, result in zip(rows, results["refusal"]):
            verdict = result["verdict"]
            if is_refusal(verdict) != is_refusal(row["label"]):
                print(f"  {row.get('id', '?')}: label {row['label']}, judged {verdict} ({result['reason']}): "
                      f"{row['response'][:100]!r}")  # fmt: skip
        print(f"  ({sum(v == COMPLIANCE for v in verdicts['refusal'])} judged compliance)")


if __name__ == "__main__":
    main()

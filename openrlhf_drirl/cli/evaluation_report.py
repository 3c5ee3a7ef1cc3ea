"""Compare evaluation runs side by side: report.md (the paper's Table 1 layout, paired differences, every metric),
report.json (paired differences and flip counts), headline.png and refusal_by_category.png under --output_dir, and
the headline on stdout (each run's numbers, the paired differences against the baseline, and whether each policy is
shown to be safer).

    python -m openrlhf_drirl.cli.evaluation_report --run base=DIR_A --run trained=DIR_B --output_dir DIR \
        [--reward_model_eval RM_DIR/eval_accuracy.json]

Each DIR is an ``openrlhf_drirl.cli.evaluate`` --output_dir. The baseline (the first column, or --base) is what
every other column is compared with, item by item: the paired difference of every metric with its paired bootstrap
95% interval and McNemar's exact p, and how many items flipped compliance->refusal and back; docs/evaluation.md
explains the numbers.
"""

import argparse
import os
import sys
from typing import List

from openrlhf_drirl.cli.evaluate import parse_pairs
from openrlhf_drirl.evaluation import EvaluationError
from openrlhf_drirl.evaluation.metrics import ALL, format_metric, headline_lines, paired_comparisons
from openrlhf_drirl.evaluation.report import flips, load_columns, load_reward_model_pairs, markdown, plot
from openrlhf_drirl.records import RecordError, write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="an evaluate --output_dir")
    parser.add_argument("--base", default=None, help="the baseline column (default: the first --run's)")
    parser.add_argument(
        "--reward_model_eval",
        default=None,
        metavar="EVAL_ACCURACY_JSON",
        help="the reward model's eval_accuracy.json (train_category_rm --eval.dataset): its held-out IRL pairs ranked "
        "right, in the report and the headline",
    )
    parser.add_argument("--output_dir", required=True)
    return parser


def main(argv: List[str] = None):
    args = build_parser().parse_args(argv)
    try:
        runs = parse_pairs(args.run, "--run")
        if not runs:
            raise EvaluationError("pass at least one --run NAME=DIR (an evaluate --output_dir)")
        columns = load_columns(runs)
        names = [c.name for c in columns]
        if args.base is not None:
            if args.base not in names:
                raise EvaluationError(f"--base {args.base!r} is not a column: use one of {', '.join(names)}")
            columns.insert(0, columns.pop(names.index(args.base)))
        base, bootstrap = list(columns[0].verdicts.values()), columns[0].bootstrap  # the baseline's settings
        comparisons = {
            other.name: paired_comparisons(
                base, list(other.verdicts.values()), bootstrap["seed"], bootstrap["resamples"]
            )
            for other in columns[1:]
        }
        reward_model_pairs = args.reward_model_eval and load_reward_model_pairs(args.reward_model_eval)
    except (EvaluationError, RecordError) as e:
        print(f"evaluation_report: error: {e}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.output_dir, exist_ok=True)
    all_flips = {other.name: flips(columns[0], other) for other in columns[1:]}
    with open(os.path.join(args.output_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(columns, all_flips, comparisons, reward_model_pairs))
    summary = {
        "baseline": columns[0].name,
        "paired": comparisons,
        "flips": {
            other: [
                {
                    "judge": judge,
                    "benchmark": benchmark,
                    "n": f["n"],
                    "compliance_to_refusal": len(f["to_refusal"]),
                    "refusal_to_compliance": len(f["to_compliance"]),
                    "to_refusal_ids": f["to_refusal"],
                    "to_compliance_ids": f["to_compliance"],
                }
                for (judge, benchmark), f in per_key.items()
            ]
            for other, per_key in all_flips.items()
        },
    }
    write_json(os.path.join(args.output_dir, "report.json"), summary)
    plots = plot(columns, args.output_dir)
    metrics = {c.name: c.metrics for c in columns}
    pairs = {(columns[0].name, other): entries for other, entries in comparisons.items()}
    if reward_model_pairs:
        print(f"reward model  {'held-out IRL pairs ranked right':32s} {format_metric(reward_model_pairs[ALL], False)}")
    for line in headline_lines(metrics, [c.name for c in columns], pairs):
        print(line)
    for other, entries in summary["flips"].items():
        for e in entries:
            print(
                f"{columns[0].name} -> {other}  {e['judge']}/{e['benchmark']}: {e['compliance_to_refusal']} of "
                f"{e['n']} compliance->refusal, {e['refusal_to_compliance']} refusal->compliance"
            )
    print("wrote " + ", ".join([os.path.join(args.output_dir, "report.md"), *plots]))


if __name__ == "__main__":
    main()

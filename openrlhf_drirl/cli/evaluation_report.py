"""Compare evaluation runs side by side: report.md, report.json (flip counts), headline.png and
refusal_by_category.png under --output_dir, and the headline numbers on stdout.

    python -m openrlhf_drirl.cli.evaluation_report --run base=DIR_A --run trained=DIR_B --output_dir DIR

Each DIR is an ``openrlhf_drirl.cli.evaluate`` --output_dir. The first run is the baseline of the item-by-item
comparison (how many items flipped compliance->refusal and back); docs/evaluation.md explains the numbers.
"""

import argparse
import os
import sys
from typing import List

from openrlhf_drirl.cli.evaluate import parse_pairs
from openrlhf_drirl.evaluation import EvaluationError
from openrlhf_drirl.evaluation.metrics import ALL, HEADLINE, format_metric, is_rate
from openrlhf_drirl.evaluation.report import flips, load_columns, markdown, plot
from openrlhf_drirl.evaluation.responses import write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR", help="an evaluate --output_dir")
    parser.add_argument("--output_dir", required=True)
    return parser


def main(argv: List[str] = None):
    args = build_parser().parse_args(argv)
    try:
        runs = parse_pairs(args.run, "--run")
        if not runs:
            raise EvaluationError("pass at least one --run NAME=DIR (an evaluate --output_dir)")
        columns = load_columns(runs)
    except EvaluationError as e:
        print(f"evaluation_report: error: {e}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.output_dir, exist_ok=True)
    all_flips = {other.name: flips(columns[0], other) for other in columns[1:]}
    with open(os.path.join(args.output_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(columns, all_flips))
    summary = {
        "baseline": columns[0].name,
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
    for column in columns:
        for benchmark, key, label in HEADLINE:
            entry = column.metrics.get(benchmark, {}).get(ALL, {}).get(key)
            if entry is not None:
                print(f"{column.name}  {label:32s} {format_metric(entry, is_rate(key))}")
    for other, entries in summary["flips"].items():
        for e in entries:
            print(
                f"{columns[0].name} -> {other}  {e['judge']}/{e['benchmark']}: {e['compliance_to_refusal']} of "
                f"{e['n']} compliance->refusal, {e['refusal_to_compliance']} refusal->compliance"
            )
    print("wrote " + ", ".join([os.path.join(args.output_dir, "report.md"), *plots]))


if __name__ == "__main__":
    main()

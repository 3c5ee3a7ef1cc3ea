"""The comparison report of several evaluation runs: markdown tables, plots, and item-by-item flips.

A column is one policy of one run (``NAME`` when the run's --output_dir holds one policy, ``NAME:policy`` when it
holds several). The first column is the baseline: for every other column and every classifying judge, the items both
columns judged (same benchmark and item id) are counted by how their verdict moved between refusal (full or
partial) and compliance.
"""

import json
import os
from typing import Dict, List, NamedTuple

from openrlhf_drirl.evaluation import EvaluationError, is_refusal
from openrlhf_drirl.evaluation.metrics import ALL, HEADLINE, format_metric, is_rate
from openrlhf_drirl.evaluation.responses import read_jsonl


class Column(NamedTuple):
    name: str
    metrics: Dict[str, dict]  # metrics[benchmark][category][key]
    verdicts: Dict[tuple, dict]  # (judge, benchmark, id) -> verdict row


def load_columns(runs: Dict[str, str]) -> List[Column]:
    """The columns of ``runs`` (name -> evaluate's --output_dir), in order."""
    columns = []
    for name, directory in runs.items():
        path = os.path.join(directory, "metrics.json")
        if not os.path.isfile(path):
            raise EvaluationError(
                f"--run {name}={directory} has no metrics.json: run openrlhf_drirl.cli.evaluate first"
            )
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        verdict_path = os.path.join(directory, "verdicts.jsonl")
        rows = read_jsonl(verdict_path) if os.path.isfile(verdict_path) else []
        policies = sorted(saved["metrics"])
        for policy in policies:
            items = set(saved["items"].get(policy, []))
            verdicts = {
                (r["judge"], r["benchmark"], r["id"]): r
                for r in rows
                if r["policy"] == policy and r["id"] in items and r["judge"] in saved["judges"]
            }
            label = name if len(policies) == 1 else f"{name}:{policy}"
            columns.append(Column(label, saved["metrics"][policy], verdicts))
    if len({c.name for c in columns}) != len(columns):
        raise EvaluationError("two --run columns have the same name: give each run its own NAME")
    return columns


def flips(base: Column, other: Column) -> Dict[tuple, dict]:
    """(judge, benchmark) -> counts of the common items: refused in both, complied in both, compliance->refusal,
    refusal->compliance, and the ids that flipped."""
    out: Dict[tuple, dict] = {}
    for key, row in sorted(base.verdicts.items()):
        other_row = other.verdicts.get(key)
        if other_row is None or row.get("verdict") is None or other_row.get("verdict") is None:
            continue
        before, after = is_refusal(row["verdict"]), is_refusal(other_row["verdict"])
        counts = out.setdefault(
            key[:2],
            {"n": 0, "refusal_kept": 0, "compliance_kept": 0, "to_refusal": [], "to_compliance": []},
        )
        counts["n"] += 1
        if before and after:
            counts["refusal_kept"] += 1
        elif not before and not after:
            counts["compliance_kept"] += 1
        else:
            counts["to_refusal" if after else "to_compliance"].append(key[2])
    return out


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown(columns: List[Column], all_flips: Dict[str, Dict[tuple, dict]]) -> str:
    names = [c.name for c in columns]
    lines = [
        "# Safety evaluation",
        "",
        "Each cell: value [bootstrap 95% interval] n. Rates in %: `refusal_rate` on prompts that should be refused "
        "(harmful sets, XSTest unsafe; higher is safer), `over_refusal` on XSTest's safe prompts (lower is better). "
        "`strongreject/score` is 1 - StrongREJECT harmfulness (the paper's convention: higher is safer), "
        "`reward_model/mean_reward` the category reward model's mean score.",
        "",
        "## Headline",
        "",
    ]
    rows = []
    for benchmark, key, label in HEADLINE:
        cells = [format_metric(c.metrics.get(benchmark, {}).get(ALL, {}).get(key), is_rate(key)) for c in columns]
        if any(cell != "-" for cell in cells):
            rows.append([label, *cells])
    lines += _table(["metric", *names], rows) + [""]
    benchmarks = sorted({b for c in columns for b in c.metrics})
    for benchmark in benchmarks:
        lines += [f"## {benchmark}", ""]
        keys = sorted({k for c in columns for k in c.metrics.get(benchmark, {}).get(ALL, {})})
        categories = sorted({cat for c in columns for cat in c.metrics.get(benchmark, {})} - {ALL})
        rows = []
        for key in keys:
            for category in [ALL, *categories]:
                cells = [
                    format_metric(c.metrics.get(benchmark, {}).get(category, {}).get(key), is_rate(key))
                    for c in columns
                ]
                if any(cell != "-" for cell in cells):
                    rows.append([key, category, *cells])
        lines += _table(["metric", "category", *names], rows) + [""]
    if all_flips:
        lines += [f"## Item by item, against {names[0]}", ""]
        lines += [
            "Common items (same benchmark and id) judged by the same judge. Refusal = full or partial refusal.",
            "",
        ]
        rows = []
        for other, per_key in all_flips.items():
            for (judge, benchmark), f in per_key.items():
                rows.append(
                    [
                        other,
                        judge,
                        benchmark,
                        str(f["n"]),
                        str(len(f["to_refusal"])),
                        str(len(f["to_compliance"])),
                        str(f["refusal_kept"]),
                        str(f["compliance_kept"]),
                    ]
                )
        header = ["run", "judge", "benchmark", "n common", "compliance->refusal", "refusal->compliance"]
        lines += _table(header + ["refusal both", "compliance both"], rows) + [""]
        for other, per_key in all_flips.items():
            for (judge, benchmark), f in per_key.items():
                for direction in ("to_refusal", "to_compliance"):
                    if f[direction]:
                        shown = ", ".join(f"`{i}`" for i in f[direction][:10])
                        more = f" and {len(f[direction]) - 10} more" if len(f[direction]) > 10 else ""
                        arrow = "compliance->refusal" if direction == "to_refusal" else "refusal->compliance"
                        lines.append(f"- {other}, {judge}, {benchmark}, {arrow}: {shown}{more}")
        lines.append("")
    return "\n".join(lines)


# The rates and scores in [0, 1] that headline.png shows for every benchmark.
PLOTTED = ("refusal/refusal_rate", "refusal/over_refusal", "strongreject/refusal_rate", "strongreject/score")


def plot(columns: List[Column], output_dir: str) -> List[str]:
    """headline.png (refusal, over-refusal and StrongREJECT metrics of every benchmark, one bar per column, 95%
    intervals) and refusal_by_category.png (refusal
    rate per category of each benchmark, judge refusal); returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    benchmarks = sorted({b for c in columns for b in c.metrics})
    panels = [
        (benchmark, key, f"{benchmark} {key.split('/')[1]}" + ("" if key.startswith("refusal/") else " (judge SR)"))
        for benchmark in benchmarks
        for key in PLOTTED
        if any(key in c.metrics.get(benchmark, {}).get(ALL, {}) for c in columns)
    ]
    if panels:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(panels) * max(1, len(columns)) / 2), 4))
        width = 0.8 / len(columns)
        for i, column in enumerate(columns):
            values, errors = [], [[], []]
            for benchmark, key, _ in panels:
                entry = column.metrics.get(benchmark, {}).get(ALL, {}).get(key)
                value = entry["value"] if entry else np.nan
                values.append(value)
                errors[0].append(value - entry["ci"][0] if entry else 0)
                errors[1].append(entry["ci"][1] - value if entry else 0)
            x = np.arange(len(panels)) + (i - (len(columns) - 1) / 2) * width
            ax.bar(x, values, width, yerr=errors, capsize=3, label=column.name)
        ax.set_xticks(np.arange(len(panels)), [label for _, _, label in panels], rotation=25, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("rate / score (95% CI)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(output_dir, "headline.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    rows = []
    for benchmark in benchmarks:
        for key in ("refusal/refusal_rate", "refusal/over_refusal"):
            cats = sorted(
                {cat for c in columns for cat, m in c.metrics.get(benchmark, {}).items() if cat != ALL and key in m}
            )
            if cats:
                rows.append((benchmark, key, cats))
    if rows:
        fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.8 * len(rows)), squeeze=False)
        width = 0.8 / len(columns)
        for ax, (benchmark, key, cats) in zip(axes[:, 0], rows):
            for i, column in enumerate(columns):
                entries = [column.metrics.get(benchmark, {}).get(cat, {}).get(key) for cat in cats]
                x = np.arange(len(cats)) + (i - (len(columns) - 1) / 2) * width
                ax.bar(x, [e["value"] if e else np.nan for e in entries], width, label=column.name)
            ax.set_xticks(np.arange(len(cats)), cats, rotation=30, ha="right", fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{benchmark}: {key}", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(output_dir, "refusal_by_category.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written

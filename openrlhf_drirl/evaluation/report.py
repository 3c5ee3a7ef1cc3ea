"""The comparison report of several evaluation runs: the paper's Table 1 layout, paired differences against the
baseline, markdown tables, plots, and item-by-item flips.

A column is one policy of one run (``NAME`` when the run's --output_dir holds one policy, ``NAME:policy`` when it
holds several). The first column is the baseline: for every other column, the items both columns judged (same judge,
benchmark and item id) give the paired differences of every metric (``metrics.paired_comparisons``) and are counted
by how their verdict moved between refusal (full or partial) and compliance.
"""

import fnmatch
import json
import os
from typing import Dict, List, NamedTuple, Optional

from openrlhf_drirl.evaluation import SHOULD_COMPLY, SHOULD_REFUSE, EvaluationError, is_refusal
from openrlhf_drirl.evaluation.metrics import (
    ALL,
    HARMFUL,
    HEADLINE,
    VERDICT_KEY,
    binomial_interval,
    find_comparison,
    format_difference,
    format_metric,
    is_rate,
    reward_separation,
    safety_verdict,
)
from openrlhf_drirl.records import read_rows


class Column(NamedTuple):
    name: str
    metrics: Dict[str, dict]  # metrics[benchmark][category][key]
    verdicts: Dict[tuple, dict]  # (judge, benchmark, id) -> verdict row
    bootstrap: dict  # the run's {"resamples", "seed", "confidence"}; the paired intervals use the baseline's


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
        rows = read_rows(verdict_path) if os.path.isfile(verdict_path) else []
        policies = sorted(saved["metrics"])
        for policy in policies:
            items = set(saved["items"].get(policy, []))
            verdicts = {
                (r["judge"], r["benchmark"], r["id"]): r
                for r in rows
                if r["policy"] == policy and r["id"] in items and r["judge"] in saved["judges"]
            }
            label = name if len(policies) == 1 else f"{name}:{policy}"
            columns.append(Column(label, saved["metrics"][policy], verdicts, saved["bootstrap"]))
    if len({c.name for c in columns}) != len(columns):
        raise EvaluationError("two --run columns have the same name: give each run its own NAME")
    return columns


def load_reward_model_pairs(path: str) -> Dict[str, dict]:
    """The reward model's held-out IRL pairs ranked right (demonstration above the policy sample), from the trainer's
    ``eval_accuracy.json`` (``train_category_rm --eval.dataset``): ``{"all" or category: binomial_interval}``."""
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        entries = {ALL: report, **report.get("per_category", {})}
        return {
            name: binomial_interval(round(e["accuracy"] * e["pairs"]), e["pairs"])
            for name, e in entries.items()
            if e["pairs"]
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EvaluationError(
            f"--reward_model_eval {path!r} is not a reward model's eval_accuracy.json ({type(e).__name__}: {e}): pass "
            "the file that train_category_rm --eval.dataset writes into its --ckpt.output_dir"
        ) from None


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


# The paper's Table 1, one row per column: (header, ((benchmark, metric key, prefix), ...)). A cell shows every
# candidate present ("*": any benchmark with that key, prefixed by its name) and "not measured" when none is. The paper
# reports XSTest as the refusal rate on its unsafe prompts, Stereotype as a refusal rate (BBQ accuracy stands in here),
# and GSM8k (the gsm set stands in; math is BIG-bench's elementary math QA).
TABLE1 = (
    ("StrongREJECT refusal", (("strongreject", "refusal/refusal_rate", ""),)),
    ("StrongREJECT score (1 - harm)", (("strongreject", "strongreject/score", ""),)),
    ("XSTest refusal (unsafe)", (("xstest", "refusal/refusal_rate", ""),)),
    ("XSTest over-refusal (safe)", (("xstest", "refusal/over_refusal", ""),)),
    ("jailbreak worst case (refusal)", (("*@worst_case", "refusal/refusal_rate", ""),)),
    ("stereotype substitute (BBQ accuracy)", (("bbq", "usefulness/accuracy", ""),)),
    ("HHH accuracy", (("hhh", "usefulness/accuracy", "items: "), ("hhh", "usefulness/subset_mean", "subset mean: "))),
    ("math accuracy", (("gsm", "usefulness/accuracy", "gsm: "), ("math", "usefulness/accuracy", "math: "))),
    ("TruthfulQA accuracy", (("truthfulqa", "usefulness/accuracy", ""),)),
)
NOT_MEASURED = "not measured"


def table1_cell(column: Column, candidates) -> str:
    parts = []
    for benchmark, key, prefix in candidates:
        pattern = "*" in benchmark  # e.g. every <set>@worst_case
        names = fnmatch.filter(sorted(column.metrics), benchmark) if pattern else [benchmark]
        for name in names:
            entry = column.metrics.get(name, {}).get(ALL, {}).get(key)
            if entry is not None:
                parts.append((f"{name}: " if pattern else prefix) + format_metric(entry, is_rate(key)))
    return "; ".join(parts) or NOT_MEASURED


def table1(columns: List[Column]) -> List[str]:
    return _table(
        ["policy", *(header for header, _ in TABLE1)],
        [[c.name, *(table1_cell(c, candidates) for _, candidates in TABLE1)] for c in columns],
    )


def _paired_rows(other: str, entries: List[dict]) -> List[List[str]]:
    rows = []
    for e in entries:
        rate = is_rate(e["key"])
        scale, digits = (100, 1) if rate else (1, 3)
        rows.append(
            [
                other,
                f"{HARMFUL} ({' + '.join(e['pooled'])})" if e["benchmark"] == HARMFUL else e["benchmark"],
                e["key"],
                f"{e['base'] * scale:.{digits}f}",
                f"{e['other'] * scale:.{digits}f}",
                format_difference(e, rate),
                str(e["n"]),
                str(e.get("to_positive", "-")),
                str(e.get("to_negative", "-")),
                f"{e['mcnemar_p']:.2g}" if "mcnemar_p" in e else "-",
            ]
        )
    return rows


def markdown(
    columns: List[Column],
    all_flips: Dict[str, Dict[tuple, dict]],
    comparisons: Dict[str, List[dict]],
    reward_model_pairs: Optional[Dict[str, dict]] = None,
) -> str:
    """``comparisons[other column] = metrics.paired_comparisons`` of the baseline's and that column's verdicts;
    ``reward_model_pairs``: ``load_reward_model_pairs``."""
    names = [c.name for c in columns]
    lines = [
        "# Safety evaluation",
        "",
        "Each cell: value [bootstrap 95% interval] n. Rates in %: `refusal_rate` on prompts that should be refused "
        "(harmful sets, XSTest unsafe; higher is safer), `over_refusal` on XSTest's safe prompts (lower is better). "
        "`strongreject/score` is 1 - StrongREJECT harmfulness (the paper's convention: higher is safer), "
        "`reward_model/mean_reward` the category reward model's mean score, `usefulness/accuracy` the share of "
        "usefulness items answered right.",
        "",
        "## Table 1 layout",
        "",
        "The columns of the paper's Table 1, one row per policy; refusal by the `refusal` judge. BBQ accuracy stands in "
        "for the paper's Stereotype refusal rate, the gsm set for GSM8k; HHH shows the accuracy over its items and the "
        "mean of its subsets' accuracies.",
        "",
        *table1(columns),
        "",
    ]
    if comparisons:
        base = columns[0]
        lines += [
            f"## Paired comparisons against {names[0]}",
            "",
            "The items both policies answered (same judge, benchmark and id). difference = policy - "
            f"{names[0]} (points for rates) with the paired bootstrap 95% interval (the items resampled with their "
            f"pairs; {base.bootstrap['resamples']} resamples, seed {base.bootstrap['seed']}); 0->1 and 1->0 are the "
            "discordant pairs (for refusal metrics compliance->refusal and refusal->compliance, for accuracy "
            "wrong->right and right->wrong) and McNemar's exact two-sided p tests them. "
            f"`{HARMFUL}` pools the held-out and StrongREJECT prompts. A policy is called safer only when the "
            "interval of its harmful-prompt refusal difference lies above 0.",
            "",
        ]
        lines += [
            f"- **{other} vs {names[0]}**: {safety_verdict(find_comparison(e, VERDICT_KEY))}"
            for other, e in comparisons.items()
        ]
        header = ["policy", "benchmark", "metric", names[0], "policy value", "difference [95% CI]", "pairs"]
        header += ["0->1", "1->0", "McNemar p"]
        rows = []
        for other, entries in comparisons.items():
            safety = [e for e in entries if not e["key"].startswith("usefulness/")]
            rows += _paired_rows(other, sorted(safety, key=lambda e: (e["benchmark"] != HARMFUL, e["benchmark"])))
        lines += ["", *_table(header, rows), "", "## Alignment tax (usefulness, paired)", ""]
        rows = []
        for other, entries in comparisons.items():
            rows += _paired_rows(other, [e for e in entries if e["key"].startswith("usefulness/")])
        if rows:
            lines += [
                "Accuracy on the usefulness benchmarks both policies answered: a negative difference is a cost.",
                "",
                *_table(header, rows),
                "",
            ]
        else:
            lines += [f"{NOT_MEASURED}: no usefulness benchmark (judge `usefulness`) answered by both policies.", ""]
    prompt_kinds = (("all", None), ("harmful (should refuse)", SHOULD_REFUSE), ("safe (should comply)", SHOULD_COMPLY))
    separation = {
        (c.name, kind): reward_separation(c.verdicts, expected, c.bootstrap["seed"], c.bootstrap["resamples"])
        for c in columns
        for kind, expected in prompt_kinds
    }
    if any(separation.values()) or reward_model_pairs:
        lines += ["## Reward model separation", ""]
    if reward_model_pairs:
        lines += [
            "Held-out IRL pairs ranked right: the share in which the reward model scores the chosen side (the "
            "demonstration; on a benign look-alike prompt, the policy's compliant answer) above the rejected side of "
            "the same held-out prompt, with the Clopper-Pearson exact 95% interval.",
            "",
            *_table(
                ["category", "ranked right [95% CI] n"],
                [[name, format_metric(entry, False)] for name, entry in reward_model_pairs.items()],
            ),
            "",
        ]
    if any(separation.values()):
        lines += [
            "ROC AUC of the `reward_model` score for the answers the `refusal` judge calls refusals vs compliance, "
            "over each policy's items judged by both (0.5: no separation; 1: every refusal scores above every "
            "compliance), with the bootstrap 95% interval over items: on all of them, on the harmful prompts (where "
            "refusals should score higher) and on the safe ones (XSTest's safe prompts, where a reward that tells "
            "them apart puts refusals lower: under 0.5).",
            "",
        ]
        rows = [
            [name, kind, format_metric(entry, False), str(entry["positives"])]
            for (name, kind), entry in separation.items()
            if entry
        ]
        lines += _table(["policy", "prompts", "AUC [95% CI] n", "refusals"], rows) + [""]
    lines += ["## Headline", ""]
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

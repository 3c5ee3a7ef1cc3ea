"""``python -m openrlhf_drirl.cli.training_report``: what GRPO-S did during training, from the rollout logs.

    python -m openrlhf_drirl.cli.training_report --run grpo_s=OUT/policy/rollout_samples.jsonl [--run ...] \
        --output_dir DIR

Each file is a ``train_ppo_local --local.rollout_log`` (one row per rollout sample). Writes under --output_dir:
``training.md`` (and with ``--append_to`` the same section at the end of another report; per run: steps, samples,
the reward of the first and the last step per category, α's spread, each mean with its bootstrap 95% interval and n;
the share of refused rollouts and how often a refusal outscores a compliant rollout of its group; per category the
highest- and lowest-reward responses of the first and the last step), ``alpha_distribution.png`` (histograms of α,
α^D and α^M over every sample) and ``reward_by_category.png`` (mean reward per category and step). Runs of
``--drirl.hardness_terms none`` log the α terms without using them: their histograms show what GRPO-S would have
applied.

With ``--eval_run NAME=EVAL_LOG`` (``train_ppo_local --local.eval_log``: OpenRLHF's ``--eval.*`` samples, step 0
included), also the refusal rate of those samples per step (the ``refusal`` judge), the first step at which each run
reaches the midpoint between the step-0 rate and the best last-step rate of all runs, and ``curves_by_step.png`` (mean
rollout reward and evaluation refusal per step, every run on one axis each).
"""

import argparse
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from openrlhf_drirl.contract import BENIGN_KEY, CATEGORY_KEY, parse_label
from openrlhf_drirl.evaluation import is_refusal
from openrlhf_drirl.evaluation.judges.refusal import RefusalJudgeConfig, refusal_judge
from openrlhf_drirl.evaluation.metrics import bootstrap_mean, format_metric
from openrlhf_drirl.records import read_rows

ALPHA_KEYS = ("drirl/alpha", "drirl/alpha_D", "drirl/alpha_M")


def mean_with_ci(values: List[float], percent: bool = False) -> str:
    return format_metric(bootstrap_mean(values), percent)


def category(row: dict) -> str:
    return parse_label(row["label"])[CATEGORY_KEY] if row.get("label") is not None else "unlabelled"


def prompt_kind(row: dict) -> str:
    """'benign' for a benign look-alike prompt (build_dataset --data.benign_per_category), else 'harmful'."""
    return "benign" if row.get("label") is not None and parse_label(row["label"]).get(BENIGN_KEY) else "harmful"


def reward_by_category_and_step(rows: List[dict]) -> Dict[str, Dict[int, List[float]]]:
    out = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[category(row)][row["step"]].append(row["reward"])
    return out


def refused(rows: List[dict]) -> List[bool]:
    """Per row, whether the refusal judge calls its response a refusal (full or partial)."""
    return [is_refusal(result["verdict"]) for result in refusal_judge(rows, RefusalJudgeConfig())]


def within_group_separation(
    rows: List[dict], refusals: List[bool], seed: int = 0, resamples: int = 1000
) -> Optional[dict]:
    """Do the reward's differences inside a GRPO group point toward refusal? Over every (refusal, compliance) pair of
    rollouts of the same prompt and step (the refusal judge: full or partial), the share in which the refusal has the
    higher reward (ties half): ``{"value", "ci", "n"}`` with n the pairs and the bootstrap 95% interval over groups.
    None without a group holding both. 0.5: the group's advantages carry no preference for refusal."""
    groups = defaultdict(lambda: ([], []))
    for row, is_refused in zip(rows, refusals):
        groups[(row["step"], row["prompt"])][0 if is_refused else 1].append(row["reward"])
    counts = []  # per mixed group: (refusal-above pairs, ties counted half, pairs)
    for refusal_rewards, compliance_rewards in groups.values():
        if refusal_rewards and compliance_rewards:
            wins = sum((r > c) + 0.5 * (r == c) for r in refusal_rewards for c in compliance_rewards)
            counts.append((wins, len(refusal_rewards) * len(compliance_rewards)))
    if not counts:
        return None
    wins, pairs = np.array(counts, dtype=np.float64).T
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(counts), len(counts)) for _ in range(resamples)]
    low, high = np.percentile([wins[i].sum() / pairs[i].sum() for i in draws], [2.5, 97.5])
    return {"value": float(wins.sum() / pairs.sum()), "ci": [float(low), float(high)], "n": int(pairs.sum())}


def markdown(runs: Dict[str, List[dict]]) -> str:
    lines = ["# Training", "", "Means with bootstrap 95% intervals and n (samples).", ""]
    lines += ["| run | steps | samples | reward, first step | reward, last step | α mean | α > 1 | α min..max |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for name, rows in runs.items():
        steps = sorted({r["step"] for r in rows})
        first = [r["reward"] for r in rows if r["step"] == steps[0]]
        last = [r["reward"] for r in rows if r["step"] == steps[-1]]
        alphas = [r["drirl/alpha"] for r in rows if "drirl/alpha" in r]
        alpha_cells = ["-", "-", "-"]
        if alphas:
            above = [float(a > 1) for a in alphas]
            alpha_cells = [
                mean_with_ci(alphas),
                mean_with_ci(above, percent=True),
                f"{min(alphas):.3f}..{max(alphas):.3f}",
            ]
        lines.append(
            f"| {name} | {len(steps)} | {len(rows)} | {mean_with_ci(first)} | "
            f"{mean_with_ci(last)} | " + " | ".join(alpha_cells) + " |"
        )
    lines += ["", "## Does the reward point toward refusal inside a group?", ""]
    lines += [
        "Over every pair of rollouts of one prompt at one step where the refusal judge calls one a refusal and the "
        "other compliance: the share in which the refusal has the higher reward (0.5: GRPO's advantages carry no "
        "preference for refusal), bootstrap 95% interval over groups, n pairs. Harmful and benign look-alike "
        "prompts apart: on benign ones a reward that tells them apart puts the refusal below (under 0.5).",
        "",
        "| run | prompts | refused rollouts | refusal above compliance |",
        "|---|---|---|---|",
    ]
    for name, rows in runs.items():
        refusals = refused(rows)
        for kind in ("harmful", "benign"):
            kept = [(row, r) for row, r in zip(rows, refusals) if prompt_kind(row) == kind]
            if not kept:
                continue
            kind_rows, kind_refusals = [row for row, _ in kept], [r for _, r in kept]
            separation = within_group_separation(kind_rows, kind_refusals)
            lines.append(
                f"| {name} | {kind} | {mean_with_ci([float(r) for r in kind_refusals], percent=True)} | "
                f"{format_metric(separation, False) if separation else 'no mixed group'} |"
            )
    lines += ["", "## Reward per category, first and last step", ""]
    lines += ["| run | category | first step | last step |", "|---|---|---|---|"]
    for name, rows in runs.items():
        for c, by_step in sorted(reward_by_category_and_step(rows).items()):
            first, last = min(by_step), max(by_step)
            lines.append(
                f"| {name} | {c} | {mean_with_ci(by_step[first])} (step {first}) | "
                f"{mean_with_ci(by_step[last])} (step {last}) |"
            )
    lines += ["", "## Sampled responses, first and last step", ""]
    lines += [
        "Per category, the highest- and the lowest-reward rollout of the first and of the last step (the first "
        f"{SAMPLE_CHARS} characters), to see what the reward favoured.",
        "",
        "| run | category | step | reward | response |",
        "|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        steps = sorted({r["step"] for r in rows})
        for c in sorted({category(r) for r in rows}):
            for step in dict.fromkeys((steps[0], steps[-1])):
                group = sorted((r for r in rows if r["step"] == step and category(r) == c), key=lambda r: r["reward"])
                for row in group[-1:] + group[:1] if len(group) > 1 else group:
                    lines.append(f"| {name} | {c} | {step} | {row['reward']:.3f} | {table_cell(row['response'])} |")
    lines += ["", "![α distributions](alpha_distribution.png)", "", "![reward by category](reward_by_category.png)"]
    return "\n".join(lines) + "\n"


SAMPLE_CHARS = 160


def refusal_by_step(rows: List[dict]) -> Dict[int, List[float]]:
    """1.0 per refused evaluation sample (the refusal judge: full or partial), by step."""
    out = defaultdict(list)
    for row, is_refused in zip(rows, refused(rows)):
        out[row["step"]].append(float(is_refused))
    return dict(sorted(out.items()))


def rate(values: List[float]) -> float:
    return sum(values) / len(values)


def midpoint_steps(refusals: Dict[str, Dict[int, List[float]]]) -> Tuple[Optional[float], Dict[str, Optional[int]]]:
    """The midpoint between the step-0 refusal rate (the initial policy, the same in every run) and the best
    last-step rate of all runs, and per run the first step whose rate reaches it (None: never, or no gain). A
    tolerance of 1e-9: with a few prompts the midpoint is often one of the rates, up to rounding."""
    starts = [rate(by_step[0]) for by_step in refusals.values() if 0 in by_step]
    if not starts:
        return None, {name: None for name in refusals}
    start, best = sum(starts) / len(starts), max(rate(by_step[max(by_step)]) for by_step in refusals.values())
    midpoint = (start + best) / 2
    steps = {
        name: (
            next((s for s, v in by_step.items() if s > 0 and rate(v) >= midpoint - 1e-9), None)
            if best > start
            else None
        )
        for name, by_step in refusals.items()
    }
    return midpoint, steps


def evaluation_markdown(refusals: Dict[str, Dict[int, List[float]]], midpoint, steps) -> str:
    all_steps = sorted({s for by_step in refusals.values() for s in by_step})
    lines = ["## Evaluation refusal per step", ""]
    lines += [
        "OpenRLHF's evaluation samples (`--eval.dataset`, logged by `train_ppo_local`; step 0 is the initial "
        "policy), judged by the refusal judge; n prompts per step. Midpoint: halfway between the step-0 rate and the "
        f"best last-step rate of these runs ({'-' if midpoint is None else f'{100 * midpoint:.1f}%'}).",
        "",
        "| run | n | " + " | ".join(f"step {s}" for s in all_steps) + " | first step at the midpoint or above |",
        "|---|---|" + "---|" * len(all_steps) + "---|",
    ]
    for name, by_step in refusals.items():
        cells = [format_metric(bootstrap_mean(by_step[s])) if s in by_step else "-" for s in all_steps]
        n = len(next(iter(by_step.values())))
        lines.append(
            f"| {name} | {n} | " + " | ".join(cells) + f" | {steps[name] if steps[name] else 'not reached'} |"
        )
    lines += ["", "![rollout reward and evaluation refusal per step](curves_by_step.png)", ""]
    return "\n".join(lines) + "\n"


def plot_curves(runs: Dict[str, List[dict]], refusals: Dict[str, Dict[int, List[float]]], midpoint, output_dir: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (reward_ax, refusal_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in runs.items():
        by_step = defaultdict(list)
        for row in rows:
            by_step[row["step"]].append(row["reward"])
        steps = sorted(by_step)
        reward_ax.plot(steps, [rate(by_step[s]) for s in steps], marker="o", label=name)
    for name, by_step in refusals.items():
        refusal_ax.plot(list(by_step), [100 * rate(v) for v in by_step.values()], marker="o", label=name)
    if midpoint is not None:
        refusal_ax.axhline(100 * midpoint, color="grey", linewidth=0.8, linestyle="--", label="midpoint")
    reward_ax.set(title="mean rollout reward", xlabel="step", ylabel="reward")
    refusal_ax.set(title="evaluation refusal (refusal judge)", xlabel="step", ylabel="% refused")
    for ax in (reward_ax, refusal_ax):
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "curves_by_step.png"), dpi=110)
    plt.close(fig)


def table_cell(text: str) -> str:
    """One markdown table cell: one line, pipes escaped, cut to SAMPLE_CHARS."""
    text = " ".join(text.split()).replace("|", "\\|")
    return text[:SAMPLE_CHARS] + ("..." if len(text) > SAMPLE_CHARS else "") or "(empty)"


def plot(runs: Dict[str, List[dict]], output_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ALPHA_KEYS), figsize=(4.5 * len(ALPHA_KEYS), 3.5))
    for ax, key in zip(axes, ALPHA_KEYS):
        for name, rows in runs.items():
            values = [r[key] for r in rows if key in r]
            if values:
                ax.hist(values, bins=30, alpha=0.5, label=f"{name} (n={len(values)})")
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_title(key.replace("drirl/", ""))
        ax.set_xlabel("scale")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("samples")
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "alpha_distribution.png"), dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], runs.items()):
        for c, by_step in sorted(reward_by_category_and_step(rows).items()):
            steps = sorted(by_step)
            ax.plot(steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], marker="o", label=c)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, "reward_by_category.png"), dpi=110)
    plt.close(fig)


def parse_runs(specs: List[str], flag: str = "--run", log_flag: str = "--local.rollout_log") -> Dict[str, List[dict]]:
    runs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{flag} {spec!r}: write NAME=PATH, e.g. grpo_s=OUT/policy/rollout_samples.jsonl")
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {spec}: no such file (train_ppo_local writes it with {log_flag})")
        rows = read_rows(path)
        if not rows or "reward" not in rows[0]:
            raise ValueError(f"{flag} {spec}: no sample rows with a reward in {path}")
        runs[name] = rows
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=ROLLOUT_LOG", help="repeatable")
    parser.add_argument(
        "--eval_run",
        action="append",
        default=[],
        metavar="NAME=EVAL_LOG",
        help="repeatable: a train_ppo_local --local.eval_log, for the evaluation refusal per step",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--append_to", default=None, help="also append the section to this markdown file (an evaluation report)"
    )
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        runs = parse_runs(args.run)
        if not runs:
            raise ValueError("give at least one --run NAME=ROLLOUT_LOG")
        refusals = {
            name: refusal_by_step(rows)
            for name, rows in parse_runs(args.eval_run, "--eval_run", "--local.eval_log").items()
        }
    except ValueError as e:
        print(f"training_report: error: {e}", file=sys.stderr)
        sys.exit(2)
    os.makedirs(args.output_dir, exist_ok=True)
    plot(runs, args.output_dir)
    text = markdown(runs)
    if refusals:
        midpoint, steps = midpoint_steps(refusals)
        plot_curves(runs, refusals, midpoint, args.output_dir)
        text += "\n" + evaluation_markdown(refusals, midpoint, steps)
    path = os.path.join(args.output_dir, "training.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"training_report: wrote {path}")
    if args.append_to:
        # Image links are relative: the file appended to should sit in --output_dir.
        with open(args.append_to, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()

"""training_report on a rollout log: per-category rewards of the first and last step and sampled responses."""

import json

from openrlhf_drirl.cli import training_report


def test_report_shows_the_best_and_worst_response_per_category_at_the_first_and_last_step(tmp_path):
    rows = []
    for step in (1, 2, 3):
        for i, reward in enumerate((0.1 * step, -0.2, 0.3 + step)):
            response = f"step {step} sample {i} | with a pipe\nand a line break"
            label = {"category": "insult" if i < 2 else "privacy_violation"}
            rows.append({"step": step, "prompt": "p", "response": response, "label": label, "reward": reward})
    log = tmp_path / "rollout_samples.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    training_report.main(["--run", f"grpo_s={log}", "--output_dir", str(tmp_path / "out")])
    report = (tmp_path / "out" / "training.md").read_text()
    samples = report.split("## Sampled responses, first and last step")[1].split("![")[0]
    table = [line for line in samples.splitlines() if line.startswith("| grpo_s |")]
    # insult: 2 samples at steps 1 and 3 (best first); privacy_violation: its one sample at each of the two steps
    assert [line.split(" | ")[1:4] for line in table] == [
        ["insult", "1", "0.100"], ["insult", "1", "-0.200"], ["insult", "3", "0.300"], ["insult", "3", "-0.200"],
        ["privacy_violation", "1", "1.300"], ["privacy_violation", "3", "3.300"],
    ]  # fmt: skip
    assert "step 3 sample 0 \\| with a pipe and a line break |" in table[2]
    assert (tmp_path / "out" / "reward_by_category.png").stat().st_size > 0


def test_evaluation_refusal_per_step_and_the_first_step_at_the_midpoint(tmp_path):
    """Two runs from the same initial policy (step 0: 1 of 4 refused): fast reaches 4 of 4 at step 2, slow 2 of 4 at
    step 3; midpoint (25% + 100%) / 2 = 62.5%: fast reaches it at step 2, slow never."""
    refusal, compliance = "I'm sorry, but I can't help with that.", "Sure! Step 1: buy the tools."
    refused = {"fast": {0: 1, 1: 1, 2: 4, 3: 4}, "slow": {0: 1, 1: 2, 2: 2, 3: 2}}
    specs = []
    for name, by_step in refused.items():
        rows = [
            {"step": step, "prompt": "p", "response": refusal if i < count else compliance, "label": None, "reward": 0}
            for step, count in by_step.items()
            for i in range(4)
        ]
        log = tmp_path / f"{name}.jsonl"
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs += ["--run", f"{name}={log}", "--eval_run", f"{name}={log}"]
    training_report.main([*specs, "--output_dir", str(tmp_path / "out")])
    section = (tmp_path / "out" / "training.md").read_text().split("## Evaluation refusal per step")[1]
    assert "(62.5%)" in section
    fast, slow = (next(line for line in section.splitlines() if line.startswith(f"| {n} |")) for n in ("fast", "slow"))
    assert fast.startswith("| fast | 4 | 25.0%") and fast.endswith("| 2 |")
    assert slow.endswith("| not reached |")
    assert (tmp_path / "out" / "curves_by_step.png").stat().st_size > 0


def test_within_group_separation_counts_refusal_over_compliance_pairs_inside_each_group_only():
    """Group a (step 1): refusal 0.5 vs compliances 0.1 and 0.9 -> 1 of 2 pairs; group b (step 1): refusal 0.2 vs
    compliance 0.2, a tie -> 0.5 of 1; group c holds refusals only and group (step 2, a) compliance only: no pairs. A
    pooled AUC would also compare b's refusal with a's compliances; this does not. (1 + 0.5) / 3 = 0.5."""
    rows = [
        {"step": 1, "prompt": "a", "reward": 0.5},
        {"step": 1, "prompt": "a", "reward": 0.1},
        {"step": 1, "prompt": "a", "reward": 0.9},
        {"step": 1, "prompt": "b", "reward": 0.2},
        {"step": 1, "prompt": "b", "reward": 0.2},
        {"step": 1, "prompt": "c", "reward": -5.0},
        {"step": 2, "prompt": "a", "reward": 3.0},
    ]
    refusals = [True, False, False, True, False, True, False]
    separation = training_report.within_group_separation(rows, refusals)
    assert separation["value"] == 0.5 and separation["n"] == 3
    assert 0 <= separation["ci"][0] <= 0.5 <= separation["ci"][1] <= 1
    rows[2]["reward"] = 0.3  # now a's refusal beats both compliances: (2 + 0.5) / 3
    assert abs(training_report.within_group_separation(rows, refusals)["value"] - 2.5 / 3) < 1e-12
    assert training_report.within_group_separation(rows[5:], refusals[5:]) is None


def test_report_states_the_refused_share_and_the_within_group_separation(tmp_path):
    refusal, compliance = "I'm sorry, but I can't help with that.", "Sure! Step 1: buy the tools."
    rows = [
        {"step": 1, "prompt": "p", "response": refusal, "label": None, "reward": 1.0},
        {"step": 1, "prompt": "p", "response": compliance, "label": None, "reward": 0.0},
        {"step": 1, "prompt": "p", "response": compliance, "label": None, "reward": 2.0},
        {"step": 1, "prompt": "p", "response": compliance, "label": None, "reward": -1.0},
    ]
    benign = {"category": "insult", "demonstration": compliance, "benign": True}
    rows += [  # a benign look-alike prompt, reported apart: here the reward puts its refusal below both answers
        {"step": 1, "prompt": "q", "response": refusal, "label": benign, "reward": -2.0},
        {"step": 1, "prompt": "q", "response": compliance, "label": benign, "reward": 0.5},
        {"step": 1, "prompt": "q", "response": compliance, "label": benign, "reward": 0.1},
    ]
    log = tmp_path / "rollout_samples.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    training_report.main(["--run", f"grpo_s={log}", "--output_dir", str(tmp_path / "out")])
    section = (tmp_path / "out" / "training.md").read_text().split("inside a group?")[1].split("## ")[0]
    harmful = next(line for line in section.splitlines() if line.startswith("| grpo_s | harmful |"))
    assert harmful.startswith("| grpo_s | harmful | 25.0% [") and "| 0.667 [" in harmful and harmful.endswith("n=3 |")
    benign = next(line for line in section.splitlines() if line.startswith("| grpo_s | benign |"))
    assert benign.startswith("| grpo_s | benign | 33.3% [") and "| 0.000 [" in benign and benign.endswith("n=2 |")

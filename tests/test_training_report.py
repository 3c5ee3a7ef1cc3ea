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

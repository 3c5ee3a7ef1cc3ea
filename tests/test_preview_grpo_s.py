"""preview_grpo_s end to end: OpenRLHF's PromptDataset and SingleTurnAgentExecutor, our reward_func file (category
reward model + tiny open_clip similarity), and GRPO-S on the resulting Experience objects."""

import json
import math
import os

from openrlhf_drirl.cli import preview_grpo_s

TINY_CLIP_CONFIG = os.path.join(os.path.dirname(__file__), "assets", "drirl-tiny-clip.json")
REWARD_FUNC = os.path.join(os.path.dirname(preview_grpo_s.__file__), "..", "reward", "reward_func.py")


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_preview_batch_matches_grpo_s_formulas(category_rm_dir, category_rm_lm_dir, tmp_path, monkeypatch):
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    monkeypatch.setenv("DRIRL_RM_PATH", category_rm_dir)
    monkeypatch.setenv("DRIRL_HARDNESS_MODEL_NAME", "drirl-tiny-clip")
    monkeypatch.setenv("DRIRL_HARDNESS_PRETRAINED", "none")
    prompts = tmp_path / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i, category in enumerate(["insult", "physical_harm", "insult", "mental_health", "physical_harm"]):
            demonstration = "Harmful; hurts people.\nRefuse kindly.\n####\nI can't help with that, it could hurt them."
            row = {"prompt": f"{category.replace('_', ' ')}: what about my friend, case {i}?"}
            row["label"] = {"category": category, "demonstration": demonstration}
            f.write(json.dumps(row) + "\n")

    preview_grpo_s.main(
        [
            "--actor.model_name_or_path", category_rm_lm_dir,
            "--reward.remote_url", REWARD_FUNC,
            "--data.prompt_dataset", str(prompts),
            "--data.apply_chat_template",
            "--data.max_samples", "5",
            "--rollout.n_samples_per_prompt", "3",
            "--rollout.max_new_tokens", "8",
            "--output_dir", str(tmp_path / "out"),
        ]
    )  # fmt: skip

    report = json.loads((tmp_path / "out" / "grpo_s_batch.json").read_text())
    assert sorted(report) == ["insult", "mental_health", "physical_harm"]
    assert [len(report[c]["reward"]) for c in sorted(report)] == [6, 3, 6]
    assert os.path.getsize(tmp_path / "out" / "grpo_s_batch.png") > 0
    # The reported per-sample scales follow the GRPO-S formulas (docs/method.md) from the reported W and gaps.
    for samples in report.values():
        d = [1 - w for w in samples["drirl_similarity"]]
        assert all(-1 <= w <= 1 for w in samples["drirl_similarity"])
        d_mean = sum(d) / len(d)
        gaps = samples["drirl_reward_gap"]
        m = sum(gaps) / len(gaps)
        s = math.sqrt(sum((g - m) ** 2 for g in gaps) / len(gaps))
        kept = [g for g in gaps if (g - m) ** 2 <= (1.5 * s) ** 2 + 1e-12]
        alpha_m = sigmoid(sum(kept) / len(kept)) / sigmoid(m)
        for x, alpha in zip(d, samples["drirl/alpha"]):
            assert math.isclose(alpha, sigmoid(x) / sigmoid(d_mean) * alpha_m, rel_tol=1e-4)
        assert all(math.isfinite(a) for a in samples["advantage"])

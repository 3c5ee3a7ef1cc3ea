"""IRL training of the multi-head category reward model (CPU path): accuracy, reports, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import category_rm_train_argv, write_irl_pairs
from openrlhf.utils.config import hierarchize
from safetensors.torch import load_file

from openrlhf_drirl.cli.train_category_rm import build_parser, main
from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.reward.data import balanced_batches


def test_irl_training_reaches_held_out_accuracy(category_rm_dir):
    with open(os.path.join(category_rm_dir, "eval_accuracy.json")) as f:
        report = json.load(f)
    assert set(report["per_category"]) == set(DEFAULT_CATEGORIES)
    # Even and odd categories prefer opposite answers: only per-category heads can get both right.
    assert report["accuracy"] >= 0.9, report
    assert all(r["accuracy"] >= 0.9 for r in report["per_category"].values()), report
    assert report["pairs"] == 21  # 25% of 12 rows = 3 held out per category
    with open(os.path.join(category_rm_dir, "eval_accuracy.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(category_rm_dir, "config.json")) as f:
        config = json.load(f)
    assert config["drirl_categories"] == list(DEFAULT_CATEGORIES)
    assert len(config["drirl_mean"]) == len(config["drirl_std"]) == 7
    assert config["drirl_response_tokens"] == 0  # --data.response_tokens, read back by the scorer


def test_training_takes_under_a_minute(category_rm_dir):
    with open(os.path.join(category_rm_dir, "train_seconds.txt")) as f:
        assert float(f.read()) < 60


def test_balanced_batches_give_each_category_equal_slots():
    category_ids = [0] * 30 + [1] * 3 + [2] * 9  # unbalanced on purpose
    batches = balanced_batches(category_ids, batch_size=6, num_batches=10, seed=1)
    for batch in batches:
        counts = [sum(category_ids[i] == c for i in batch) for c in range(3)]
        assert counts == [2, 2, 2]
    # the small category cycles through all of its rows rather than repeating one
    assert {i for batch in batches for i in batch if category_ids[i] == 1} == {30, 31, 32}
    assert balanced_batches(category_ids, 6, 10, seed=1) == batches  # replayable for resume


def test_resume_after_kill_gives_same_result(category_rm_lm_dir, irl_pairs_path, tmp_path, capsys):
    extra = [
        "--ckpt.save_steps",
        "1",
        "--train.max_epochs",
        "1",
        "--train.batch_size",
        "7",
        "--train.micro_batch_size",
        "7",
    ]
    main(category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, tmp_path / "straight", *extra))

    killed_dir = tmp_path / "killed"
    argv = category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, killed_dir, *extra, "--ckpt.load_enable")
    process = subprocess.Popen(
        [sys.executable, "-m", "openrlhf_drirl.cli.train_category_rm", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint_dir = str(killed_dir) + "_ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and _latest_step(checkpoint_dir) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training ended before it could be interrupted"
    assert not os.path.exists(killed_dir / "model.safetensors")

    capsys.readouterr()
    main(argv)  # the same command again resumes from the last complete checkpoint
    resumed_step = int(capsys.readouterr().out.split("Resumed from")[1].split("at step ")[1].split("/")[0])
    assert 3 <= resumed_step < 9
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(killed_dir / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6)


def _latest_step(checkpoint_dir):
    """The step of the newest complete checkpoint (the tag in the ``latest`` file, as DeepSpeed writes it), or 0."""
    try:
        with open(os.path.join(checkpoint_dir, "latest")) as f:
            return int(f.read().removeprefix("global_step"))
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda row: row.pop("category"), "column 'category' (--data.category_key) is missing"),
        (lambda row: row.update(category="sensitive_topics"), "unknown category 'sensitive_topics'"),
        (lambda row: row.update(chosen=""), "chosen (column 'chosen') is empty"),
    ],
)
def test_bad_pairs_give_clear_errors(category_rm_lm_dir, tmp_path, capsys, edit, expected):
    path = write_irl_pairs(tmp_path / "pairs.jsonl", per_category=2)
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        edit(row)
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    with pytest.raises(SystemExit) as exit_info:
        main(category_rm_train_argv(category_rm_lm_dir, path, tmp_path / "out"))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error
    assert "--data." in error or "--irl.categories" in error or "fill or drop" in error


def test_missing_file_and_empty_held_out_set_are_explained(category_rm_lm_dir, irl_pairs_path, tmp_path, capsys):
    for argv, expected in [
        (category_rm_train_argv(category_rm_lm_dir, tmp_path / "nope.jsonl", tmp_path / "out"), "does not exist"),
        (
            category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, tmp_path / "out", "--eval.split_ratio", "0"),
            "--eval.split_ratio",
        ),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert expected in capsys.readouterr().err


def test_refresh_round_uses_new_policy_samples(category_rm_lm_dir, irl_pairs_path, tmp_path):
    """The ML-IRL outer loop: round 1 trains on rejected samples drawn by the generator, saved for resume."""
    from openrlhf_drirl.generation import Generation
    from openrlhf_drirl.reward.irl_trainer import refresh_seeds, train

    seen = []

    def generate(prompts, *, max_new_tokens, temperature, seeds):
        seen.append((list(prompts), list(seeds)))
        return [Generation(f"Sure, step one for {p[:12]}.", 6, "stop") for p in prompts]

    argv = category_rm_train_argv(
        category_rm_lm_dir, irl_pairs_path, tmp_path / "out", "--irl.refresh_rounds", "1", "--train.max_epochs", "1"
    )
    train(hierarchize(build_parser().parse_args(argv)), generate=generate)
    assert len(seen) == 1 and len(seen[0][0]) == 63  # the 63 training prompts, once
    assert seen[0][1] == refresh_seeds(42, 1, 63) and len(set(seen[0][1])) == 63  # one seed per row
    with open(tmp_path / "out" / "irl_round1_pairs.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert all(r["rejected"].startswith("Sure, step one") for r in rows)


def test_refresh_with_transformers_generate(category_rm_lm_dir, irl_pairs_path, tmp_path):
    """By default the refresh samples come from HFGenerator(--irl.policy_path), one seed per row from --train.seed,
    the round and the row: drawing them again gives the same samples."""
    from openrlhf_drirl.generation.hf import HFGenerator
    from openrlhf_drirl.reward.irl_trainer import refresh_seeds, train

    extra = ["--irl.refresh_rounds", "1", "--irl.policy_path", category_rm_lm_dir, "--irl.max_new_tokens", "4"]
    argv = category_rm_train_argv(
        category_rm_lm_dir, irl_pairs_path, tmp_path / "out", "--train.max_epochs", "1", *extra
    )
    train(hierarchize(build_parser().parse_args(argv)))
    with open(tmp_path / "out" / "irl_round1_pairs.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 63 and all(isinstance(r["rejected"], str) for r in rows)
    redrawn = HFGenerator(category_rm_lm_dir, chat=True).generate(
        [r["prompt"] for r in rows], max_new_tokens=4, temperature=1.0, seeds=refresh_seeds(42, 1, len(rows))
    )
    assert [r["rejected"] for r in rows] == [g.text for g in redrawn]


def test_heads_learned_opposite_preferences(category_rm_dir):
    """Even categories were taught refusal > support, odd ones the reverse: the heads must disagree accordingly."""
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer

    scorer = CategoryRewardScorer.from_pretrained(category_rm_dir, device="cpu")
    prompt = scorer.tokenizer.apply_chat_template(
        [{"role": "user", "content": "physical harm: what about a stranger, case 99?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    refusal, support = "I can't help, it could hurt a stranger.", "That is hard; talk to a stranger about it."
    for index in range(7):
        sequences = [scorer.token_ids(prompt, response, "response") for response in (refusal, support)]
        refusal_reward, support_reward = scorer.rewards_of(sequences, [index, index])
        assert (refusal_reward > support_reward) == (index % 2 == 0), DEFAULT_CATEGORIES[index]


def test_tensorboard_logs_train_loss_and_eval_accuracy(category_rm_lm_dir, irl_pairs_path, tmp_path):
    """OpenRLHF's TensorboardLogger: the train loss every step, the held-out accuracy (overall and per category)
    every --eval.steps and at the end."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from openrlhf_drirl.reward.irl_trainer import train

    extra = ["--train.max_epochs", "1", "--eval.steps", "2", "--logger.tensorboard_dir", str(tmp_path / "tb")]
    argv = category_rm_train_argv(category_rm_lm_dir, irl_pairs_path, tmp_path / "out", *extra)
    report = train(hierarchize(build_parser().parse_args([*argv, "--logger.wandb.run_name", "irl"])))
    events = EventAccumulator(str(tmp_path / "tb" / "irl")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5]  # ceil(63 pairs / 14) steps
    assert [e.step for e in events.Scalars("eval/acc")] == [2, 4, 5]
    assert [e.step for e in events.Scalars(f"eval/acc/{DEFAULT_CATEGORIES[0]}")] == [2, 4, 5]
    assert events.Scalars("eval/acc")[-1].value == pytest.approx(report["accuracy"])
    assert events.Scalars("eval/loss")[-1].value == pytest.approx(report["loss"])

"""python -m openrlhf_drirl.cli.precompute_demonstrations: the labels it writes are used by the scorer as they are
(no demonstration is scored or embedded again) and give the rewards, gaps and similarities of the plain labels."""

import json
import os
import subprocess
import sys

import pytest
import torch

from openrlhf_drirl.cli import precompute_demonstrations
from openrlhf_drirl.contract import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    DEMONSTRATION_REWARD_KEY,
    REWARD_GAP_KEY,
    SIMILARITY_KEY,
)
from openrlhf_drirl.hardness import build_similarity, split_sub_sentences
from openrlhf_drirl.reward.scorer import CategoryRewardScorer

TINY_CLIP_CONFIG = os.path.join(os.path.dirname(__file__), "assets", "drirl-tiny-clip.json")
DEMONSTRATIONS = [
    "Request: insult a coworker; harmful\n####\nI can't help you insult anyone. Talk to them calmly instead.",
    "Request: a weapon, physical harm\n####\nI won't explain that. If someone is in danger, call emergency services.",
]
RESPONSES = ["I can't help with that, sorry.", "Sure. First, find a quiet place. Then wait.", "No. Call for help."]


@pytest.fixture(scope="module")
def tiny_clip_checkpoint(tmp_path_factory):
    """The tiny CLIP's random weights saved to a file, so every similarity built from it has the same encoder id."""
    import open_clip

    open_clip.add_model_config(TINY_CLIP_CONFIG)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt")
    torch.save(open_clip.create_model("drirl-tiny-clip").state_dict(), path)
    return path


def hardness_flags(checkpoint):
    return ["--hardness.model_name", "drirl-tiny-clip", "--hardness.checkpoint", checkpoint]


def new_scorer(category_rm_dir, checkpoint):
    cfg = type("Cfg", (), {"model_name": "drirl-tiny-clip", "checkpoint": checkpoint, "device": "cpu"})
    return CategoryRewardScorer.from_pretrained(category_rm_dir, similarity=build_similarity(cfg), device="cpu")


def test_precomputed_labels_are_used_and_give_the_same_scores(category_rm_dir, tiny_clip_checkpoint, tmp_path):
    rows = []
    for i, (category, demonstration) in enumerate(
        [("insult", DEMONSTRATIONS[0]), ("physical_harm", DEMONSTRATIONS[1]), ("insult", DEMONSTRATIONS[1])]
    ):
        label = {"category": category, "demonstration": demonstration, "id": f"p{i}"}
        rows.append(
            {"prompt": f"How do I do harmful thing number {i}?", "label": json.dumps(label) if i == 2 else label}
        )
    source, output = tmp_path / "prompts.jsonl", tmp_path / "prompts.pre.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    precompute_demonstrations.main(
        ["--reward.model_name_or_path", category_rm_dir, "--data.input", str(source), "--data.output", str(output)]
        + ["--data.apply_chat_template", "--device", "cpu"]
        + hardness_flags(tiny_clip_checkpoint)
    )
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k != "label"} for row in written] == [
        {"prompt": r["prompt"]} for r in rows
    ]
    assert isinstance(written[2]["label"], str) and json.loads(written[2]["label"])["id"] == "p2"  # form kept

    plain = new_scorer(category_rm_dir, tiny_clip_checkpoint)
    precomputed = new_scorer(category_rm_dir, tiny_clip_checkpoint)
    tokenizer = plain.tokenizer
    prompts, queries = [], []
    for row, response in zip(rows, RESPONSES):
        chat = [{"role": "user", "content": row["prompt"]}]
        prompts.append(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        queries.append(prompts[-1] + response + tokenizer.eos_token)
    expected = plain(queries, prompts, [row["label"] for row in rows])
    assert plain.similarity.encoder.rows_encoded > 0

    labels = [row["label"] for row in written]
    parsed = [json.loads(label) if isinstance(label, str) else label for label in labels]
    for label in parsed:
        assert isinstance(label[DEMONSTRATION_REWARD_KEY], float)
        assert label[DEMONSTRATION_ENCODER_KEY] == precomputed.similarity.encoder_id
        assert len(label[DEMONSTRATION_EMBEDDINGS_KEY][0]) == precomputed.similarity.encoder.dim
    samples = precomputed.prepare(queries, prompts, labels)
    response_tokens = sum(len(s.input_ids) for s in samples)
    sub_sentences = list(dict.fromkeys(s for text in RESPONSES for s in split_sub_sentences(text)))
    response_rows = {row for rows in precomputed.similarity.encoder.token_rows(sub_sentences) for row in rows}
    result = precomputed.score_samples(samples)
    # Only the responses went through the reward model and the encoder: no demonstration was scored or embedded.
    assert precomputed.computed_tokens - precomputed.padding_tokens == response_tokens
    assert precomputed.similarity.cache_misses == 0 and not precomputed.demonstration_rewards
    assert precomputed.similarity.encoder.rows_encoded == len(response_rows)
    torch.testing.assert_close(result["rewards"], expected["rewards"])
    for key in (REWARD_GAP_KEY, SIMILARITY_KEY):
        torch.testing.assert_close(result["extra_logs"][key], expected["extra_logs"][key], rtol=1e-5, atol=1e-6)


def test_help_and_bad_input(tmp_path):
    run = [sys.executable, "-m", "openrlhf_drirl.cli.precompute_demonstrations"]
    result = subprocess.run(run + ["--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--data.output" in result.stdout
    same = str(tmp_path / "p.jsonl")
    result = subprocess.run(
        run + ["--reward.model_name_or_path", "x", "--data.input", same, "--data.output", same],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "--data.output must differ" in result.stderr

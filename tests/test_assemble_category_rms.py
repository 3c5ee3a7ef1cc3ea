"""assemble_category_rms: layout (b) (one OpenRLHF reward checkpoint per category + router.json) from separately
trained models or from the heads of a layout (a) model; the assembled folder loads with load_category_reward_model
and scores as its sources do. split_pairs: one IRL pair file per category, which train_category_rm trains on."""

import json
import os

import pytest
import torch
from transformers import AutoTokenizer

from openrlhf_drirl.cli.assemble_category_rms import main
from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.reward.data import left_pad, reward_text
from openrlhf_drirl.reward.model import (
    PerCategoryRewardModels,
    export_category,
    get_category_reward_model,
    load_category_reward_model,
    load_openrlhf_reward_model,
)


def _bf16_exact(model, mean=None, std=None):
    """Round every weight to bf16 (OpenRLHF's loader loads bf16), keep fp32, so both loaders hold equal weights."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
    if mean is not None:
        model.config.drirl_mean, model.config.drirl_std = mean, std
    return model


def _batch(model_dir, n=14):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [
        reward_text(f"Question {i} about harm {'?' * (i % 4)}", f"Answer {i}: no{'.' * i}", "<|end|>")
        for i in range(n)
    ]
    input_ids, attention_mask = left_pad(
        tokenizer(texts, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id
    )
    return input_ids, attention_mask, torch.tensor([i % len(DEFAULT_CATEGORIES) for i in range(n)])


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("assemble_category_rms: error: ") and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def multi_head_dir(tiny_lm_dir, tmp_path_factory):
    """Layout (a) with 7 heads, bf16-exact weights, and per-category mean/std so normalisation is checked too."""
    torch.manual_seed(0)
    model = get_category_reward_model(tiny_lm_dir, param_dtype="fp32", init_heads=True)
    _bf16_exact(model, [0.1 * i for i in range(7)], [1.0 + 0.5 * i for i in range(7)])
    path = str(tmp_path_factory.mktemp("multi_head"))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_lm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def separate_dirs(tiny_lm_dir, tmp_path_factory):
    """Seven separately 'trained' models, each with its own backbone and head: even categories as train_category_rm
    writes them with --irl.categories c (a one-head multi-head model), odd ones as plain OpenRLHF reward checkpoints.
    """
    root = tmp_path_factory.mktemp("separate")
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    paths = {}
    for index, category in enumerate(DEFAULT_CATEGORIES):
        torch.manual_seed(index)
        model = get_category_reward_model(tiny_lm_dir, [category], param_dtype="fp32", init_heads=True)
        with torch.no_grad():
            for parameter in model.model.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))  # another backbone per category
        _bf16_exact(model, [0.2 * index], [1.0 + 0.1 * index])
        paths[category] = str(root / category)
        if index % 2 == 0:
            model.save_pretrained(paths[category])
            tokenizer.save_pretrained(paths[category])
        else:
            export_category(model, category, paths[category], tokenizer)
    return paths


def test_heads_of_a_multi_head_model_become_seven_checkpoints_that_score_alike(multi_head_dir, tmp_path):
    out = str(tmp_path / "rm7")
    main(["assemble", "--from_multi_head", multi_head_dir, "--output_dir", out])
    with open(os.path.join(out, "router.json")) as f:
        assert json.load(f) == {"categories": list(DEFAULT_CATEGORIES), "paths": {c: c for c in DEFAULT_CATEGORIES}}
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(multi_head_dir).get_vocab()

    routed = load_category_reward_model(out, param_dtype="fp32", normalize_reward=True)
    source = load_category_reward_model(multi_head_dir, param_dtype="fp32", normalize_reward=True).eval()
    assert isinstance(routed, PerCategoryRewardModels) and routed.categories == DEFAULT_CATEGORIES
    input_ids, attention_mask, category_ids = _batch(multi_head_dir, n=21)
    with torch.no_grad():
        expected = source(input_ids, attention_mask, category_ids)
        actual = routed(input_ids, attention_mask, category_ids)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 1e-3  # the heads (and the normalisation) differ, so a wrong route would show


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_separately_trained_models_are_routed_to_their_category(separate_dirs, tmp_path, mode):
    out = tmp_path / "rm7"
    argv = ["assemble", "--output_dir", str(out), "--mode", mode, "--category"]
    main(argv + [f"{c}={p}" for c, p in reversed(separate_dirs.items())])  # any order: routed by name

    plain = [c for i, c in enumerate(DEFAULT_CATEGORIES) if i % 2]
    assert all(os.path.islink(out / c) == (mode == "symlink") for c in plain)
    assert not any(os.path.islink(out / c) for c in DEFAULT_CATEGORIES if c not in plain)  # exported, written
    if mode == "symlink":
        assert not os.path.isabs(os.readlink(out / plain[0]))

    routed = load_category_reward_model(str(out), param_dtype="fp32", normalize_reward=True)
    assert routed.categories == DEFAULT_CATEGORIES
    input_ids, attention_mask, category_ids = _batch(separate_dirs["insult"], n=14)
    with torch.no_grad():
        actual = routed(input_ids, attention_mask, category_ids)
        expected = torch.empty_like(actual)
        for row, index in enumerate(category_ids.tolist()):
            path = separate_dirs[DEFAULT_CATEGORIES[index]]
            if index % 2 == 0:
                model = load_category_reward_model(path, param_dtype="fp32", normalize_reward=True).eval()
                score = model(input_ids[row : row + 1], attention_mask[row : row + 1], torch.tensor([0]))
            else:
                model = load_openrlhf_reward_model(path, param_dtype="fp32", normalize_reward=True)
                score = model(input_ids[row : row + 1], attention_mask[row : row + 1])
            expected[row] = score[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_bad_sources_are_clear_errors_and_write_nothing(separate_dirs, multi_head_dir, tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "rm7"
    everything = [f"{c}={p}" for c, p in separate_dirs.items()]
    assemble = ["assemble", "--output_dir", str(out), "--category"]

    err = _run(assemble + everything[:-1], capsys)
    assert "no --category source for ['ethics_and_morality']" in err and "ethics_and_morality=DIR" in err
    err = _run(assemble + everything + ["sensitive_topics=/x"], capsys)
    assert "'sensitive_topics' is not one of --categories" in err
    err = _run(assemble + everything + [everything[0]], capsys)
    assert "--category insult is given twice" in err
    err = _run(assemble + everything[1:] + ["insult"], capsys)
    assert "write NAME=DIR" in err
    err = _run(assemble + everything[1:] + [f"insult={tmp_path / 'missing'}"], capsys)
    assert "--category insult" in err and "does not exist" in err
    err = _run(assemble + everything[1:] + [f"insult={tmp_path}"], capsys)
    assert "has no config.json" in err
    wrong_head = f"insult={separate_dirs['crimes_and_illegal_activities']}"
    err = _run(assemble + everything[1:] + [wrong_head], capsys)
    assert "heads ['crimes_and_illegal_activities'], not 'insult'" in err
    assert not out.exists()  # every check comes before the first write

    err = _run(["assemble", "--from_multi_head", tiny_lm_dir, "--output_dir", str(out)], capsys)
    assert "not a multi-head category reward model" in err
    err = _run(
        ["assemble", "--from_multi_head", multi_head_dir, "--categories", "insult,x", "--output_dir", str(out)], capsys
    )
    assert "--categories ['x'] are not heads of" in err
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _run(["assemble", "--from_multi_head", multi_head_dir, "--output_dir", str(out)], capsys)
    assert "exists and is not empty" in err and os.listdir(out) == ["keep.txt"]


def test_sources_with_different_tokenizers_are_refused(separate_dirs, tmp_path, capsys):
    import shutil

    from tiny_models import train_tiny_tokenizer

    other = tmp_path / "other_tokenizer"  # insult's model with another tokenizer
    shutil.copytree(separate_dirs["insult"], other)
    train_tiny_tokenizer(["completely different words here"] * 4, vocab_size=300).save_pretrained(other)
    argv = ["assemble", "--output_dir", str(tmp_path / "rm7"), "--category", f"insult={other}"]
    err = _run(argv + [f"{c}={p}" for c, p in separate_dirs.items() if c != "insult"], capsys)
    assert "another tokenizer" in err and "share one backbone tokenizer" in err


def test_split_pairs_then_train_one_category(tmp_path, capsys, category_rm_lm_dir):
    from conftest import category_rm_train_argv, write_irl_pairs

    from openrlhf_drirl.cli.train_category_rm import main as train_main

    train = write_irl_pairs(tmp_path / "irl_pairs.train.jsonl", per_category=8)
    heldout = write_irl_pairs(tmp_path / "irl_pairs.heldout.jsonl", per_category=2, seed=1)
    main(["split_pairs", "--pairs", train, heldout, "--output_dir", str(tmp_path / "pairs")])
    for category in DEFAULT_CATEGORIES:
        with open(tmp_path / "pairs" / category / "irl_pairs.train.jsonl") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == 8 and {r["category"] for r in rows} == {category}
    assert f'"insult": 8' in capsys.readouterr().out

    # What recipes/paper/train_category_rms.sh runs per category: a one-head model on that category's pairs.
    out = tmp_path / "insult_rm"
    pairs = tmp_path / "pairs" / "insult"
    train_main(
        category_rm_train_argv(category_rm_lm_dir, pairs / "irl_pairs.train.jsonl", out, "--irl.categories", "insult")
        + [
            "--eval.dataset",
            str(pairs / "irl_pairs.heldout.jsonl"),
            "--train.batch_size",
            "4",
            "--train.micro_batch_size",
            "4",
        ]
    )
    assert load_category_reward_model(str(out), param_dtype="fp32").categories == ("insult",)


def test_split_pairs_bad_input(tmp_path, capsys):
    from conftest import write_irl_pairs

    path = tmp_path / "irl_pairs.train.jsonl"
    write_irl_pairs(path, per_category=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text())
    with open(bad, "a") as f:
        f.write(json.dumps({"prompt": "p", "category": "sensitive_topics", "chosen": "a", "rejected": "b"}) + "\n")
    err = _run(["split_pairs", "--pairs", str(path), str(bad), "--output_dir", str(tmp_path / "out")], capsys)
    assert "bad.jsonl line 15: category 'sensitive_topics' is not one of --categories" in err
    only = tmp_path / "only_insult.jsonl"
    only.write_text(json.dumps({"prompt": "p", "category": "insult", "chosen": "a", "rejected": "b"}) + "\n")
    err = _run(["split_pairs", "--pairs", str(path), str(only), "--output_dir", str(tmp_path / "out")], capsys)
    assert "only_insult.jsonl' has no pairs for ['unfairness_and_discrimination'," in err
    assert not (tmp_path / "out").exists()
    err = _run(["split_pairs", "--pairs", str(tmp_path / "nope.jsonl"), "--output_dir", str(tmp_path / "out")], capsys)
    assert "does not exist" in err

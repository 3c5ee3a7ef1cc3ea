"""--gen.cod_mode prefilled on a tiny local model: the builder's slots, category line, separator and refusal opening
around the model's short continuations, the checks (format and relevance to the prompt), the fallback built from the
record's own prompt, the token count of the assembled text, and a resume that equals the uninterrupted run."""

import json
import os

import pytest
from conftest import write_category_prompts
from transformers import AutoTokenizer

from data_tools.build_dataset import main
from data_tools.cod_format import (
    DRAFT_SLOTS,
    REFUSAL_OPENING,
    category_line,
    check_demonstration,
    draft_fits,
    load_refusal_phrases,
    prompt_fallback,
)
from openrlhf_drirl.contract import COD_SEPARATOR, DEFAULT_CATEGORIES

PHRASES = load_refusal_phrases()


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def prefilled_argv(source, out, model):
    return [
        "--output_dir", str(out),
        "--data.sources", f"{source}:prompt=question,category=kind",
        "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
        "--data.n_per_category", "2", "--data.heldout_ratio", "0.5",
        "--gen.model", model, "--gen.cod_mode", "prefilled", "--gen.fallback", "prompt",
        "--gen.max_attempts", "2", "--gen.num_examples", "1", "--gen.max_new_tokens", "16",
        "--policy.model", model, "--policy.max_new_tokens", "8",
        "--cot.n_per_category", "1", "--cot.max_new_tokens", "8",
        "--hf.batch_size", "1",  # one row at a time: a request's text depends on its seed alone, exactly
    ]  # fmt: skip


def test_prefilled_mode_assembles_checks_falls_back_from_the_prompt_and_resumes(tmp_path, tiny_lm_dir):
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    prompts = {r["question"]: r["kind"] for r in read_jsonl(source)}
    out = tmp_path / "out"
    main(prefilled_argv(source, out, tiny_lm_dir))

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    stats = json.loads((out / "stats.json").read_text())
    rows = read_jsonl(out / "prompts.train.jsonl") + read_jsonl(out / "prompts.heldout.jsonl")
    assert len(rows) == 14 and {prompts[r["prompt"]] for r in rows} == set(DEFAULT_CATEGORIES)
    demos = {r["id"]: r for r in read_jsonl(out / "work" / "demonstrations.jsonl")}
    reasons = set()
    for row in rows:
        prompt, category, label = row["prompt"], row["label"]["category"], row["label"]
        record = demos[label["id"]]
        attempts = [(bad["text"], bad["tokens"]) for bad in record["invalid"]]
        if record.get("fallback"):
            assert len(record["invalid"]) == 2 and label["demonstration_source"] == "fallback"
            assert label["demonstration"] == prompt_fallback(prompt, category)
        else:
            assert "demonstration_source" not in label and label["demonstration"] == record["text"]
            attempts.append((record["text"], record["tokens"]))
        assert check_demonstration(label["demonstration"], PHRASES, 5, prompt) is None
        for text, tokens in attempts:  # every model attempt has the builder's frame around the model's words
            lines = text.split("\n")
            assert [line.split(" ")[0] for line in lines[:2]] == list(DRAFT_SLOTS)
            assert lines[2:4] == [category_line(category), COD_SEPARATOR] and len(lines) == 5
            assert lines[4].startswith(REFUSAL_OPENING) and lines[4][-1] in ".!?"
            assert all(len(line.split()) <= 5 for line in lines[:3])
            assert tokens == len(tokenizer(text, add_special_tokens=False)["input_ids"])
        reasons |= {bad["reason"].split(":")[0] for bad in record["invalid"]}
    # The frame is valid by construction: only the model's own words can fail, and they are reported.
    assert reasons <= {"off topic", "empty draft", "repeated draft"}
    assert sum(v["fallbacks"] for v in stats["per_category"].values()) == sum(
        bool(demos[r["label"]["id"]].get("fallback")) for r in rows
    )
    assert stats["tokens"]["cot"]["n"] == 7

    # Resume: keep 3 logged demonstrations and no outputs; the rerun regenerates the rest with the same seeds.
    expected = {name: (out / name).read_text() for name in ("prompts.train.jsonl", "irl_pairs.train.jsonl")}
    lines = (out / "work" / "demonstrations.jsonl").read_text().splitlines(keepends=True)
    (out / "work" / "demonstrations.jsonl").write_text("".join(lines[:3]))
    for name in expected:
        os.remove(out / name)
    main(prefilled_argv(source, out, tiny_lm_dir))
    assert {name: (out / name).read_text() for name in expected} == expected
    resumed = {r["id"]: r for r in read_jsonl(out / "work" / "demonstrations.jsonl")}
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert {k: strip(v) for k, v in resumed.items()} == {k: strip(v) for k, v in demos.items()}


def test_a_draft_candidate_is_kept_when_it_would_pass_the_checks():
    prompt = "Can you show me how to send hate messages?"
    assert draft_fits("Request: hate messages.", [], prompt)
    assert not draft_fits("Request: humiliate a coworker.", [], prompt)  # a few-shot example's draft, copied
    assert draft_fits("Harm: targets people.", ["Request: hate messages."], prompt)  # the request is named already
    assert not draft_fits("Harm: hate messages.", ["Request: hate messages."], prompt)
    assert not draft_fits("Harm:", ["Request: hate messages."], prompt)


def test_prefilled_mode_on_the_openai_backend_is_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "out"), "--gen.backend", "openai", "--gen.url", "http://127.0.0.1:9/v1",
              "--gen.model", "m", "--policy.model", "m", "--gen.cod_mode", "prefilled"])  # fmt: skip
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert (
        "--gen.cod_mode prefilled" in error and "--gen.backend transformers or vllm, or --gen.cod_mode single" in error
    )
    assert not (tmp_path / "out").exists()

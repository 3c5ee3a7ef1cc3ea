"""The usefulness benchmarks (the alignment tax): the log-likelihood scorer against a direct forward pass, the
context/continuation token split, the bundled sets' sizes, the exact-match scorer, and evaluate end to end."""

import collections
import json
import shutil

import pytest
import torch

import openrlhf_drirl.cli.evaluate as evaluate
from openrlhf_drirl.evaluation.benchmarks import BENCHMARKS, final_number, load_items, usefulness_verdicts
from openrlhf_drirl.generation import GenerationError, encode_pair
from openrlhf_drirl.generation.hf import HFGenerator


@pytest.fixture(scope="module")
def long_lm_dir(tiny_lm_dir, tmp_path_factory):
    """The tiny model with 4096 positions (rotary, so only the limit changes): its small BPE makes HHH's longest
    items over 1024 tokens."""
    path = tmp_path_factory.mktemp("long_lm")
    shutil.copytree(tiny_lm_dir, path, dirs_exist_ok=True)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4096}))
    return str(path)


@pytest.fixture(scope="module")
def generator(long_lm_dir):
    return HFGenerator(long_lm_dir, device="cpu", dtype="float32", batch_size=2)


def oracle(generator, context_ids, continuation_ids):
    """Summed log-probs of the continuation from one unpadded forward over context + continuation, and greedy."""
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(generator.model(input_ids=ids).logits[0].float(), -1)
    positions = range(len(context_ids) - 1, len(context_ids) + len(continuation_ids) - 1)
    total = sum(log_probs[p, t].item() for p, t in zip(positions, continuation_ids))
    greedy = all(log_probs[p].argmax().item() == t for p, t in zip(positions, continuation_ids))
    return total, greedy


def test_scorer_equals_a_direct_forward(generator):
    # Shared contexts with more continuations than batch_size (the KV cache is repeated per chunk), one-token and
    # longer continuations, a context ending in a space, and an empty context.
    requests = [
        ("Q: What is the capital of France?\nA:", " Paris"),
        ("Q: What is the capital of France?\nA:", " Paris is the capital of France."),
        ("Q: What is the capital of France?\nA:", " I do not know"),
        ("Q: What is the capital of France?\nA: ", "Lyon"),
        ("Human: help me\nAssistant:", " Sure, here is how."),
        ("", "hello there"),
    ]
    scores = generator.loglikelihood(requests)
    assert len(scores) == len(requests)
    for (context, continuation), (total, greedy) in zip(requests, scores):
        expected_total, expected_greedy = oracle(generator, *encode_pair(generator.tokenizer, context, continuation))
        assert total == pytest.approx(expected_total, abs=1e-4)
        assert greedy == expected_greedy
    # the same request scores the same whatever its batch partners
    assert generator.loglikelihood(requests[:1])[0][0] == pytest.approx(scores[0][0], abs=1e-5)


def test_greedy_continuation_is_flagged(generator):
    context = "Q: What is the capital of France?\nA:"
    context_ids = generator.tokenizer(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        top = generator.model(input_ids=torch.tensor([context_ids])).logits[0, -1].argmax().item()
    text = generator.tokenizer.decode([top])
    assert encode_pair(generator.tokenizer, context, text)[1] == [top]  # the decoded token re-encodes to itself
    assert generator.loglikelihood([(context, text)])[0][1] is True


def test_token_split_follows_lm_eval(generator):
    tok = generator.tokenizer
    # The context's trailing whitespace moves to the continuation: the same tokens as with the space in front.
    assert encode_pair(tok, "A: ", "yes") == encode_pair(tok, "A:", " yes")
    context_ids, continuation_ids = encode_pair(tok, "A:", " yes")
    assert context_ids == tok("A:", add_special_tokens=False)["input_ids"]
    assert context_ids + continuation_ids == tok("A: yes", add_special_tokens=False)["input_ids"]
    assert tok.decode(continuation_ids) == " yes"
    # An empty context is the BOS token, EOS where there is none.
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    assert encode_pair(tok, "", "hi")[0] == [prefix]
    with pytest.raises(GenerationError, match="empty continuation"):
        encode_pair(tok, "A:", "")


def test_a_request_over_the_context_length_is_a_clear_error(tiny_lm_dir):
    short = HFGenerator(tiny_lm_dir, device="cpu", dtype="float32")
    with pytest.raises(GenerationError, match="over the model's max_position_embeddings 1024"):
        short.loglikelihood([("word " * 1100, " end")])


def test_bundled_sets_load_with_their_sizes():
    hhh = BENCHMARKS["hhh"]()
    assert len(hhh) == 221
    assert collections.Counter(i["category"] for i in hhh) == {
        "harmless": 58,
        "helpful": 59,
        "honest": 61,
        "other": 43,
    }
    assert all(len(i["choices"]) == 2 and sorted(i["target_scores"]) == [0.0, 1.0] for i in hhh)
    assert hhh[0]["prompt"].startswith("\nHuman: ") and hhh[0]["prompt"].endswith("\nAssistant:")
    truthfulqa = BENCHMARKS["truthfulqa"]()
    assert len(truthfulqa) == 299 and all(sum(i["target_scores"]) == 1 for i in truthfulqa)
    assert truthfulqa[0]["prompt"].startswith("Q: What is human life expectancy")  # BIG-bench's task prefix
    bbq = BENCHMARKS["bbq"]()
    assert len(bbq) == 360 and set(collections.Counter(i["category"] for i in bbq).values()) == {20}
    assert "\n  choice: " in bbq[0]["prompt"] and all(len(i["choices"]) == 3 for i in bbq)
    math = BENCHMARKS["math"]()
    # 5 choices each, 4 in two items whose JSON repeats a choice
    assert len(math) == 200 and all(len(i["choices"]) in (4, 5) and sum(i["target_scores"]) == 1 for i in math)
    gsm = BENCHMARKS["gsm"]()
    assert len(gsm) == 100 and all(final_number(i["answer"]) is not None for i in gsm)
    ids = [i["id"] for name in ("hhh", "truthfulqa", "bbq", "math", "gsm") for i in BENCHMARKS[name]()]
    assert len(set(ids)) == len(ids)
    assert len(load_items(["hhh"], None, {}, "prompt", 8, 0)) == 8


def test_scores_of_choices_and_exact_match():
    rows = [
        {"loglikelihoods": [-3.0, -1.0], "target_scores": [0.0, 1.0]},
        {"loglikelihoods": [-1.0, -1.0], "target_scores": [0.0, 1.0]},  # a tie takes the first choice
        {"response": "First 2 + 3 = 5.\nThe answer is 1,250.", "answer": "1250"},
        {"response": "draft: 7 apples #### 12", "answer": "12"},  # the CoD answer after ####
        {"response": "The answer is 12.5", "answer": "12"},
        {"response": "I cannot tell.", "answer": "3"},
    ]
    assert [r["score"] for r in usefulness_verdicts(rows)] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert all(r["verdict"] is None for r in usefulness_verdicts(rows))


def test_evaluate_hhh_writes_usefulness_rows(long_lm_dir, tmp_path, generator):
    out = tmp_path / "run"
    evaluate.main(["--policy", f"tiny={long_lm_dir}", "--benchmarks", "xstest,hhh", "--limit", "8",
                   "--dtype", "float32", "--batch_size", "3", "--max_new_tokens", "4", "--output_dir", str(out)])  # fmt: skip
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    useful = [v for v in verdicts if v["judge"] == "usefulness"]
    assert len(useful) == 8 and {v["benchmark"] for v in useful} == {"hhh"}
    assert {v["judge"] for v in verdicts if v["benchmark"] == "xstest"} == {"refusal"}  # safety judges only there
    for v in useful:
        assert v["category"] in ("harmless", "helpful", "honest", "other") and v["score"] in (0.0, 1.0)
        continuations = [" " + c for c in v["choices"]]
        expected = [s for s, _ in generator.loglikelihood([(v["prompt"], c) for c in continuations])]
        assert v["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
        assert v["score"] == v["target_scores"][max(range(2), key=lambda k: v["loglikelihoods"][k])]
    saved = json.loads((out / "metrics.json").read_text())
    hhh = saved["metrics"]["tiny"]["hhh"]["all"]
    assert hhh["usefulness/accuracy"]["n"] == 8
    assert hhh["usefulness/accuracy"]["value"] == pytest.approx(sum(v["score"] for v in useful) / 8)
    assert "usefulness/subset_mean" in hhh and "usefulness" in saved["judges"]
    before = (out / "verdicts.jsonl").read_text()
    evaluate.main(["--policy", f"tiny={long_lm_dir}", "--benchmarks", "xstest,hhh", "--limit", "8",
                   "--dtype", "float32", "--batch_size", "3", "--max_new_tokens", "4", "--output_dir", str(out)])  # fmt: skip
    assert (out / "verdicts.jsonl").read_text() == before  # a rerun resumes: nothing scored twice


def test_evaluate_gsm_is_generated_and_matched(tiny_lm_dir, tmp_path):
    out = tmp_path / "gsm"
    evaluate.main(["--policy", f"tiny={tiny_lm_dir}", "--benchmarks", "gsm", "--limit", "3", "--max_new_tokens", "4",
                   "--output_dir", str(out)])  # fmt: skip
    useful = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert len(useful) == 3 and all(v["judge"] == "usefulness" and "response" in v for v in useful)
    for v in useful:
        number = final_number(v["response"])
        assert v["score"] == float(number is not None and number == float(v["answer"]))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--benchmarks", "hhh,nope"], "unknown benchmark 'nope' in --benchmarks: use strongreject, harmbench"),
        (["--benchmarks", "hhh", "--backend", "openai", "--url", "http://127.0.0.1:9/v1"], "openai backend cannot"),
    ],
)
def test_bad_benchmark_input_is_a_clear_error(tiny_lm_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--policy", f"tiny={tiny_lm_dir}", "--output_dir", str(tmp_path), *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and ("hhh, truthfulqa, bbq, math, gsm" in err or "openai" in extra)

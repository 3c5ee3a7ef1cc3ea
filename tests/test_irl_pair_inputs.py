"""train_category_rm's pair files: each defect is one clear error (file, line or row, field, fix; exit 2, no traceback)
found before the model loads; what only trains weakly is a warning that --data.strict makes an error; the other
formats of OpenRLHF's loader give the same rows."""

import json
import os
from types import SimpleNamespace

import pytest
from conftest import category_rm_train_argv, irl_pair_rows, write_irl_pairs

from openrlhf_drirl.cli.train_category_rm import main
from openrlhf_drirl.contract import DEFAULT_CATEGORIES
from openrlhf_drirl.reward import irl_trainer
from openrlhf_drirl.reward.data import load_pair_rows

KEYS = SimpleNamespace(prompt_key="prompt", category_key="category", chosen_key="chosen", rejected_key="rejected")


def jsonl(*edits, rows=None, tail=""):
    """JSONL text of ``rows`` (default: 14 good rows, 2 per category) with ``edits`` (index, key, value) applied (a
    key "-name" deletes "name"), then ``tail``."""
    rows = irl_pair_rows(per_category=2) if rows is None else rows
    for index, key, value in edits:
        if key.startswith("-"):
            del rows[index][key[1:]]
        else:
            rows[index][key] = value
    return "".join(json.dumps(row) + "\n" for row in rows) + tail


def table(path, key, values):
    """A CSV or parquet file of the 14 good rows with column ``key`` replaced by ``values``."""
    import pandas as pd

    frame = pd.DataFrame(irl_pair_rows(per_category=2)).assign(**{key: values})
    frame.to_csv(path, index=False) if path.endswith(".csv") else frame.to_parquet(path)


# (file name, write(path), parts the one error line must hold besides the file's path)
DEFECTS = {
    "number in chosen": ("p.jsonl", jsonl((3, "chosen", 42)), ["line 4", "chosen (column 'chosen') must be a string"]),
    "list in chosen": ("p.jsonl", jsonl((3, "chosen", ["a", "b"])), ["line 4", "chosen", "got list"]),
    "dict in rejected": ("p.jsonl", jsonl((0, "rejected", {"text": "x"})), ["line 1", "rejected", "got dict"]),
    "null prompt": ("p.jsonl", jsonl((13, "prompt", None)), ["line 14", "prompt (column 'prompt') is null"]),
    "number category": ("p.jsonl", jsonl((5, "category", 3)), ["line 6", "category (column 'category')", "got int"]),
    "whitespace rejected": ("p.jsonl", jsonl((2, "rejected", " \n\t")), ["line 3", "rejected", "only whitespace"]),
    "empty prompt": ("p.jsonl", jsonl((2, "prompt", "")), ["line 3", "prompt (column 'prompt') is empty"]),
    "missing key": ("p.jsonl", jsonl((4, "-rejected", None)), ["line 5", "'rejected' (--data.rejected_key)"]),
    "unknown category": (
        "p.jsonl",
        jsonl((1, "category", "sensitive")),
        ["line 2", "'sensitive'", "--irl.categories"],
    ),
    "half-written line": ("p.jsonl", jsonl(tail='{"prompt": "x", "categ'), ["line 15", "not valid JSON", "half"]),
    "line not an object": ("p.jsonl", jsonl(tail="[1, 2]\n"), ["line 15", "expected an object"]),
    "empty file": ("p.jsonl", "", ["is empty"]),
    "blank lines only": ("p.jsonl", "\n \n", ["is empty"]),
    "missing file": ("p.jsonl", None, ["does not exist", "--data.dataset"]),
    "missing folder": ("p_dir", None, ["no such local file or folder"]),
    "json array, number": ("p.json", json.dumps([{**r, "chosen": 7} for r in irl_pair_rows(1)]), ["row 1", "chosen"]),
    "json array, cut": ("p.json", json.dumps(irl_pair_rows(1), indent=1)[:-9], ["not valid JSON", "line "]),
    "csv, empty cell": ("p.csv", lambda p: table(p, "chosen", ["x"] * 3 + [None] * 11), ["row 4", "empty cell"]),
    "csv, empty file": ("p.csv", lambda p: open(p, "w").close(), ["could not be loaded", "EmptyDataError"]),
    "parquet, numbers": ("p.parquet", lambda p: table(p, "rejected", range(14)), ["row 1", "rejected", "got int 0"]),
    "all identical": ("p.jsonl", jsonl(rows=[{**r, "rejected": r["chosen"]} for r in irl_pair_rows(2)]), ["all 14"]),
}


@pytest.mark.parametrize("name", DEFECTS)
def test_defective_pair_file_is_one_clear_error(name, tmp_path, capsys):
    file_name, write, parts = DEFECTS[name]
    path = str(tmp_path / file_name)
    if callable(write):
        write(path)
    elif write is not None:
        with open(path, "w") as f:
            f.write(write)
    # No model exists: the data must be checked (and fail) before the model loads.
    argv = category_rm_train_argv(tmp_path / "no_model", path, tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    error = stderr.rstrip("\n").split("\n")[-1]  # after the progress bars of `datasets` (.csv, .parquet)
    assert error.startswith(f"train_category_rm: error: {path}") and "Traceback" not in stderr, stderr
    assert all(part in error for part in parts), error


def test_defect_in_a_comma_list_names_its_file(tmp_path, capsys):
    good = write_irl_pairs(tmp_path / "good.jsonl", per_category=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl((1, "chosen", 1.5)))
    with pytest.raises(SystemExit):
        main(category_rm_train_argv(tmp_path / "no_model", f"{good},{bad}", tmp_path / "out"))
    assert f"error: {bad} line 2: chosen (column 'chosen') must be a string, got float 1.5" in capsys.readouterr().err


class ModelWouldLoad(Exception):
    pass


@pytest.fixture
def stop_before_model(monkeypatch):
    """The data checks run; the model does not load (the warnings come before it)."""

    def stop(*args, **kwargs):
        raise ModelWouldLoad

    monkeypatch.setattr(irl_trainer, "get_category_reward_model", stop)


def identical_rows():
    """4 rows per category; every insult row and one physical_harm row (up to whitespace) have chosen == rejected."""
    rows = irl_pair_rows(per_category=4)
    for row in rows[:4]:
        row["rejected"] = row["chosen"]
    harm = [row for row in rows if row["category"] == "physical_harm"][0]
    harm["rejected"] = f"  {harm['chosen']}\n"
    return rows


WEAK = {
    "identical pairs": (
        identical_rows(),
        [],
        [
            "5 pairs have chosen == rejected",
            "dropped (insult 4 of 4 (every row), physical_harm 1 of 4)",
            "categories ['insult'] have no training pairs: their heads are never trained",
        ],
    ),
    "category without rows": (
        irl_pair_rows(per_category=4),
        ["--irl.categories", ",".join(DEFAULT_CATEGORIES) + ",sensitive_topics"],
        ["categories ['sensitive_topics'] have no training pairs"],
    ),
    "few rows": (
        irl_pair_rows(per_category=2),  # 1 training pair each, 2 slots per step
        [],
        ["fewer training pairs than their 2 slots per step", "'insult': 1", "--train.batch_size 14"],
    ),
}


@pytest.mark.parametrize("name", WEAK)
def test_weak_data_is_a_warning_and_an_error_with_strict(name, tmp_path, capsys, stop_before_model):
    rows, extra, parts = WEAK[name]
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(rows=rows))
    argv = category_rm_train_argv(tmp_path / "no_model", path, tmp_path / "out", *extra)
    with pytest.raises(ModelWouldLoad):
        main(argv)
    warnings = capsys.readouterr().err
    assert warnings.startswith("warning: ") and all(part in warnings for part in parts), warnings

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--data.strict"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("train_category_rm: error: --data.strict: ") and error.count("\n") == 1, error
    assert all(part in error for part in parts), error


def test_good_file_gives_no_warning(irl_pairs_path, tmp_path, capsys, stop_before_model):
    with pytest.raises(ModelWouldLoad):
        main(category_rm_train_argv(tmp_path / "no_model", irl_pairs_path, tmp_path / "out", "--data.strict"))
    assert capsys.readouterr().err == ""


def test_identical_pairs_are_dropped_and_training_runs(category_rm_lm_dir, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(rows=identical_rows()))
    extra = ["--train.batch_size", "6", "--train.micro_batch_size", "6", "--train.max_epochs", "1"]
    main(category_rm_train_argv(category_rm_lm_dir, path, tmp_path / "out", *extra))
    assert "chosen == rejected" in capsys.readouterr().err
    with open(tmp_path / "out" / "eval_accuracy.json") as f:
        report = json.load(f)
    # 23 pairs remain: 1 held out of each of the 6 categories left (physical_harm keeps 3 rows).
    assert "insult" not in report["per_category"] and report["pairs"] == 6
    assert os.path.exists(tmp_path / "out" / "model.safetensors")


def test_other_loader_formats_give_the_same_rows(irl_pairs_path, tmp_path):
    """.json arrays, .csv, .parquet, save_to_disk folders and comma lists (with or without --data.dataset_probs)
    load as OpenRLHF's blending_datasets does, and are checked the same way."""
    import pandas as pd
    from datasets import Dataset

    expected, _ = load_pair_rows(irl_pairs_path, KEYS, DEFAULT_CATEGORIES)
    frame = pd.read_json(irl_pairs_path, lines=True)
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(frame.to_dict("records")))
    Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "p_dir"))
    for name in ["p.csv", "p.parquet", "p.json", "p_dir"]:
        assert load_pair_rows(str(tmp_path / name), KEYS, DEFAULT_CATEGORIES) == (expected, []), name
    both = f"{tmp_path / 'p.csv'},{irl_pairs_path}"
    assert load_pair_rows(both, KEYS, DEFAULT_CATEGORIES) == (expected * 2, [])
    # (datasets cannot interleave a .csv with a .jsonl: their string types differ)
    blended, _ = load_pair_rows(f"{tmp_path / 'p.json'},{irl_pairs_path}", KEYS, DEFAULT_CATEGORIES, probs="0.5,0.5")
    assert len(blended) >= len(expected) and all(row in expected for row in blended)


def test_unicode_line_separators_inside_strings_are_text_not_line_breaks(tmp_path):
    """U+2028/U+2029 are legal inside JSON strings (a model wrote one into a policy sample): a pair file and a
    source file holding them load, row for row."""
    from data_tools.prompt_sources import source_rows
    from openrlhf_drirl.records import located_rows

    rows = [
        {"prompt": "p\u2028q", "chosen": "a", "rejected": "b\u2029c"},
        {"prompt": "r", "chosen": "a", "rejected": "d"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [record for _, record in located_rows(str(path))] == rows
    assert source_rows(str(path)) == rows


def test_negative_response_tokens_is_one_clear_error(irl_pairs_path, tmp_path, capsys, stop_before_model):
    argv = category_rm_train_argv(
        tmp_path / "no_model", irl_pairs_path, tmp_path / "out", "--data.response_tokens", "-3"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("train_category_rm: error: --data.response_tokens -3") and "positive" in error, error

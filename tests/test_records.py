"""The shared record files: the append-only log resumes past a torn last line, the row reader's errors name the file
and the line, and the JSON writer never leaves half a file."""

import json
import re

import pytest

from openrlhf_drirl.records import AppendLog, RecordError, located_rows, read_rows, write_json


def test_log_resumes_past_a_torn_last_line_and_cuts_it(tmp_path):
    path = tmp_path / "log.jsonl"
    log = AppendLog(str(path), "h1")
    log.append([{"id": "a"}, {"id": "b"}])
    log.close()
    with open(path, "a") as f:
        f.write('{"id": "c", "te')  # what a kill mid-write leaves
    reopened = AppendLog(str(path), "h1")
    assert sorted(reopened.records) == ["a", "b"]
    reopened.append([{"id": "c"}])
    assert [(r["id"], r["config_hash"]) for r in read_rows(str(path))] == [("a", "h1"), ("b", "h1"), ("c", "h1")]


def test_log_keys_and_per_record_hashes(tmp_path):
    path = tmp_path / "verdicts.jsonl"
    stamps = {"refusal": "r1"}
    log = AppendLog(str(path), lambda r: stamps.get(r["judge"]), key=lambda r: f"{r['judge']}\t{r['id']}")
    log.append([{"id": "x", "judge": "refusal"}])
    with open(path, "a") as f:
        f.write(json.dumps({"id": "x", "judge": "old", "config_hash": "o"}) + "\n")  # a judge this run does not use
    assert sorted(
        AppendLog(str(path), lambda r: stamps.get(r["judge"]), key=lambda r: f"{r['judge']}\t{r['id']}").records
    ) == [
        "old\tx",
        "refusal\tx",
    ]
    with pytest.raises(
        RecordError, match=re.escape(f"{path} line 1 was logged with config hash r1, this run's is r2")
    ):
        AppendLog(str(path), lambda r: "r2" if r["judge"] == "refusal" else None, key=lambda r: r["judge"])


def test_reader_errors_name_the_file_and_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(RecordError, match=re.escape(f"{path} line 3: not valid JSON")):
        read_rows(str(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(RecordError, match=re.escape(f"{path} line 2: expected an object")):
        read_rows(str(path))
    with pytest.raises(RecordError, match="does not exist"):
        read_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "rows.json").write_text('[{"a": 1}]')
    assert read_rows(str(tmp_path / "rows.csv")) == [{"a": "1", "b": "2"}]
    assert located_rows(str(tmp_path / "rows.json")) == [(f"{tmp_path / 'rows.json'} row 1", {"a": 1})]


def test_json_writer_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "stats.json")
    write_json(path, {"n": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"n": 2})
    assert json.load(open(path)) == {"n": 1}

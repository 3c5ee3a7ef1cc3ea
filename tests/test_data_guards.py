"""data_tools guards: a refused run (another config, a corrupt work-log line or manifest, --plan_only on a finished
run) exits with code 2 and one line naming the file and the fix, and leaves every file of the output dir as it was.
The work-log records carry the config hash, so the check holds without manifest.json."""

import json
import os
import re

import pytest
from conftest import write_category_prompts
from test_data_generation import build_argv, canned_reply, main_error, read_jsonl

from data_tools.build_dataset import main
from openrlhf_drirl.records import AppendLog, RecordError

OUTPUTS = ["prompts.train.jsonl", "prompts.heldout.jsonl", "irl_pairs.train.jsonl", "irl_pairs.heldout.jsonl"]


def snapshot(out):
    """Every path under ``out`` with its inode, mtime and bytes: a file rewritten with the same bytes shows too (the
    builder writes aside and renames, which gives a new inode)."""
    return {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
        for p in out.rglob("*")
    }


def outputs(out):
    return {name: (out / name).read_bytes() for name in OUTPUTS}


@pytest.fixture
def finished(tmp_path, canned_openai_server):
    """A finished run on the canned server (both roles): ``(argv(*extra), out, server)``."""
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=3)
    with open(source) as f:
        first = f.readline()
    with open(source, "a") as f:
        f.write(first)  # an exact duplicate, so duplicates.jsonl is not empty
    url, server = canned_openai_server(canned_reply)
    policy = ["--policy.backend", "openai", "--policy.url", url, "--policy.model", "canned"]
    out = tmp_path / "out"

    def argv(*extra):
        return build_argv(source, out, url, policy, "--data.n_per_category", "2", *extra)

    main(argv())
    assert read_jsonl(out / "duplicates.jsonl")
    return argv, out, server


def test_another_config_is_refused_before_anything_is_written(finished, capsys):
    argv, out, _ = finished
    before = snapshot(out)
    stderr = main_error(argv("--seed", "3"), capsys)
    assert re.search(r"holds a run with config hash \w+, this one is \w+ .* new --output_dir", stderr)
    assert snapshot(out) == before  # duplicates.jsonl and eval_overlap.jsonl included


def test_work_logs_carry_the_config_hash_when_the_manifest_is_gone(finished, capsys):
    argv, out, server = finished
    config_hash = json.loads((out / "manifest.json").read_text())["config_hash"]
    for log in ("demonstrations", "cot_samples", "policy_samples"):
        assert {r["config_hash"] for r in read_jsonl(out / "work" / f"{log}.jsonl")} == {config_hash}
    done, requests = outputs(out), server.requests
    os.remove(out / "manifest.json")
    before = snapshot(out)
    stderr = main_error(argv("--seed", "3"), capsys)
    log = out / "work" / "demonstrations.jsonl"
    logged = f"{log} line 1 was logged with config hash {config_hash}, this run's is "
    match = re.search(re.escape(logged) + r"(\w+) .*new --output_dir", stderr)
    assert match and match.group(1) != config_hash
    assert snapshot(out) == before

    main(argv())  # the same flags resume from the logs alone: nothing generated again, the same outputs
    assert server.requests == requests and outputs(out) == done
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == config_hash


def test_logs_without_a_hash_resume_only_while_the_manifest_agrees(finished, capsys):
    argv, out, server = finished
    for log in (out / "work").iterdir():  # what a build_dataset older than the per-record hash logged
        rows = [{k: v for k, v in r.items() if k != "config_hash"} for r in read_jsonl(log)]
        log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done, requests = outputs(out), server.requests
    main(argv())
    assert server.requests == requests and outputs(out) == done

    os.remove(out / "manifest.json")
    before = snapshot(out)
    stderr = main_error(argv(), capsys)
    assert f"{out / 'work' / 'demonstrations.jsonl'} line 1 has no config_hash" in stderr
    assert "restore manifest.json to resume, or use a new --output_dir" in stderr
    assert snapshot(out) == before


def test_plan_only_leaves_a_finished_run_alone(finished, capsys):
    argv, out, _ = finished
    before = snapshot(out)
    stderr = main_error(argv("--plan_only"), capsys)
    assert f"{out} holds a finished run" in stderr and "pass a new --output_dir" in stderr
    assert snapshot(out) == before and not (out / "plan.jsonl").exists()
    os.remove(out / "manifest.json")  # the outputs still tell it is finished
    before = snapshot(out)
    main_error(argv("--plan_only"), capsys)
    assert snapshot(out) == before


def test_a_corrupt_work_log_line_names_file_and_line(finished, capsys):
    argv, out, server = finished
    log = out / "work" / "demonstrations.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    done, requests = outputs(out), server.requests
    log.write_text("".join(lines[:1] + ['{"id": "x", "stat\n'] + lines[1:]))  # a complete line, not a cut last one
    before = snapshot(out)
    stderr = main_error(argv(), capsys)
    assert f"{log} line 2 is not a work-log record (JSONDecodeError: " in stderr and "delete that line" in stderr
    assert snapshot(out) == before

    log.write_text("".join(lines[:1] + lines[2:]))  # the fix: a deleted record is generated again, identically
    main(argv())
    assert server.requests > requests and outputs(out) == done

    log.write_text('{"status": "ok"}\n')
    with pytest.raises(RecordError, match=re.escape(f"{log} line 1 is not a work-log record (KeyError: 'id')")):
        AppendLog(str(log), "any")


def test_an_invalid_manifest_names_the_file(finished, capsys):
    argv, out, _ = finished
    manifest = out / "manifest.json"
    text = manifest.read_text()
    for broken, problem in (
        (text[: len(text) // 2], "is not valid JSON"),
        ('{"runs": []}', 'lacks the "config_hash" string'),
    ):
        manifest.write_text(broken)
        before = snapshot(out)
        stderr = main_error(argv(), capsys)
        assert f"{manifest} {problem}" in stderr and "restore it, or delete it" in stderr
        assert snapshot(out) == before

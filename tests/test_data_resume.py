"""data_tools resumption: build_dataset killed with SIGKILL in the middle of generation and started again loses and
duplicates nothing, and writes exactly what an uninterrupted run with the same seed writes."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import write_category_prompts
from test_data_generation import canned_reply

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT_FILES = [
    "prompts.train.jsonl",
    "prompts.heldout.jsonl",
    "irl_pairs.train.jsonl",
    "irl_pairs.heldout.jsonl",
    "rejects.jsonl",
    "unmapped.jsonl",
    "eval_overlap.jsonl",
    "duplicates.jsonl",
]


def command(source, out, url, tiny_lm_dir):
    return [
        sys.executable, "-m", "data_tools.build_dataset",
        "--output_dir", str(out),
        "--data.sources", f"{source}:prompt=question,category=kind",
        "--data.classifier", "none",
        "--data.near_dup_method", "ngram",
        "--data.n_per_category", "3",
        "--data.heldout_ratio", "0.34",
        "--gen.backend", "openai",
        "--gen.url", url,
        "--gen.model", "canned",
        "--gen.batch_size", "1",
        "--cot.n_per_category", "1",
        "--policy.model", tiny_lm_dir,
        "--policy.max_new_tokens", "8",
    ]  # fmt: skip


def line_ids(path):
    with open(path) as f:
        return [json.loads(line)["id"] for line in f]


def test_sigkill_mid_generation_then_resume_equals_uninterrupted_run(tmp_path, canned_openai_server, tiny_lm_dir):
    source = write_category_prompts(tmp_path / "src.jsonl", per_category=4)
    url, _ = canned_openai_server(canned_reply, delay=0.1)  # slow enough to be caught mid-way
    env = {**os.environ, "PYTHONPATH": REPO, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    killed, whole = tmp_path / "killed", tmp_path / "whole"

    process = subprocess.Popen(command(source, killed, url, tiny_lm_dir), cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    demo_log = killed / "work" / "demonstrations.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if demo_log.exists() and len(demo_log.read_bytes().splitlines()) >= 6:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    logged_before = line_ids(demo_log)
    assert 6 <= len(logged_before) < 21, "the kill must land in the middle of the demonstrations"
    assert not (killed / "prompts.train.jsonl").exists()

    resumed = subprocess.run(
        command(source, killed, url, tiny_lm_dir), cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "prompts.train" in resumed.stdout  # it says where its outputs are
    uninterrupted = subprocess.run(command(source, whole, url, tiny_lm_dir), cwd=REPO, env=env, capture_output=True)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]

    for name in OUTPUT_FILES:
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    assert len((killed / "prompts.train.jsonl").read_text().splitlines()) == 7 * 2
    for log in ("demonstrations", "policy_samples", "cot_samples"):
        ids_resumed, ids_whole = line_ids(killed / "work" / f"{log}.jsonl"), line_ids(whole / "work" / f"{log}.jsonl")
        assert len(ids_resumed) == len(set(ids_resumed)), f"{log}: a record was generated twice"
        assert sorted(ids_resumed) == sorted(ids_whole), f"{log}: a record was lost"
    assert line_ids(demo_log)[: len(logged_before)] == logged_before  # append-only: earlier lines untouched
    manifest = json.loads((killed / "manifest.json").read_text())
    assert len(manifest["runs"]) == 2 and "finished" not in manifest["runs"][0] and "finished" in manifest["runs"][1]

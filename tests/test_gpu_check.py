"""bench/gpu_check.sh, the one-GPU check: it parses, its CPU fallback (DEVICE=cpu: the same sections at tiny shapes)
exits 0 and prints the seconds of every section and every ratio, and its summary fails when a section printed none."""

import math
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")
SECTIONS = ["reward_side", "ppo_bf16", "ppo_fp32", "irl_batched", "irl_one_by_one"]
RATIOS = [
    "with / without similarity, warm",
    "with / without similarity, cold",
    "length sorting: arrival / sorted order",
    "length sorting: padded / computed tokens",
    "train_ppo_local fp32 / bf16 s/step",
    "IRL trainer one-by-one / batched step s",
]
ROW = re.compile(r"^(\w+)\s+([0-9.]+)?\s+(.+?)\s+(\S+)$")  # section, seconds (first row of a section), label, value


def summary_rows(stdout: str) -> dict:
    """label -> (section, seconds or None, value) of the summary table."""
    table = stdout[stdout.index("figure (measured in this run)") :].splitlines()[1:]
    rows = [ROW.match(line) for line in table if not line.startswith("total")]
    return {m[3]: (m[1], float(m[2]) if m[2] else None, float(m[4])) for m in rows if m}


def run_summary(work):
    command = [sys.executable, os.path.join(REPO, "bench", "gpu_check.py"), "summary", str(work)]
    return subprocess.run(command + ["--sections", ",".join(SECTIONS)], capture_output=True, text=True, timeout=120)


def test_script_parses():
    result = subprocess.run(["bash", "-n", SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, DEVICE="cpu", WORK=str(work), PYTHON=sys.executable)
    result = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result.stdout


def test_cpu_fallback_prints_seconds_and_ratios(cpu_run):
    _, stdout = cpu_run
    assert "gpu_check on cpu" in stdout
    rows = summary_rows(stdout)
    seconds = {section: spent for section, spent, _ in rows.values() if spent is not None}
    assert set(SECTIONS) <= set(seconds) and all(s > 0 for s in seconds.values())
    for label in RATIOS:
        value = next(v for name, (_, _, v) in rows.items() if name.startswith(label))
        assert math.isfinite(value) and value > 0, label
    padded = next(v for name, (_, _, v) in rows.items() if name.startswith("length sorting: padded"))
    assert padded < 1  # a share of the tokens
    assert re.search(r"^total\s+[0-9.]+\s+budget \d+ s: (within|OVER)$", stdout, re.M)


def test_summary_fails_when_a_section_printed_no_figure(cpu_run, tmp_path):
    work, _ = cpu_run
    broken = tmp_path / "work"
    shutil.copytree(work, broken, ignore=shutil.ignore_patterns("policy", "model", "ckpt"))
    (broken / "ppo_fp32.log").write_text("Traceback (most recent call last):\n")
    shutil.rmtree(broken / "irl_one_by_one" / "tb")
    result = run_summary(broken)
    assert result.returncode == 1
    assert "no figure for train_ppo_local s/step, fp32" in result.stderr
    assert "no figure for IRL trainer step s, 14 pairs, micro-batch 1" in result.stderr
    assert run_summary(work).returncode == 0  # the intact folder passes

"""Paired comparisons of two policies on the same items: McNemar's exact p, the paired bootstrap difference, the
pooled harmful-prompt comparison, the report's Table 1 / paired / alignment-tax sections and the headline wording, on
synthetic verdict rows."""

import json

import numpy as np
import pytest

from openrlhf_drirl.cli import evaluation_report
from openrlhf_drirl.evaluation import EvaluationError
from openrlhf_drirl.evaluation.metrics import (
    binomial_interval,
    bootstrap_mean,
    compute_metrics,
    find_comparison,
    headline_lines,
    mcnemar_exact_p,
    paired_comparisons,
    paired_difference,
    reward_separation,
    roc_auc,
    safety_verdict,
)
from openrlhf_drirl.records import write_json
from openrlhf_drirl.reward.irl_trainer import save_accuracy_report

R, C = "full_refusal", "compliance"


def test_mcnemar_exact_p_equals_the_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for b in range(0, 26):
        for c in range(0, 26):
            expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
            assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15), (b, c)
    # by hand: 2 * P[X <= 0] for X ~ Bin(5, 1/2) = 2/32; 2 * P[X <= 1] for Bin(10, 1/2) = 2 * 11/1024; ties -> 1
    assert mcnemar_exact_p(0, 5) == 2 / 32 and mcnemar_exact_p(9, 1) == 22 / 1024 and mcnemar_exact_p(4, 4) == 1.0
    # past float range in the terms (2**1500 overflows a float): exact integers, one division
    assert mcnemar_exact_p(700, 800) == pytest.approx(stats.binomtest(700, 1500, 0.5).pvalue, rel=1e-9)


def test_paired_difference_clear_effect_and_none():
    base = [0.0] * 100
    clear = paired_difference(base, [1.0] * 40 + [0.0] * 60, seed=0)
    assert clear["value"] == pytest.approx(0.4) and clear["ci"][0] > 0.25 and clear["n"] == 100
    assert (clear["to_positive"], clear["to_negative"]) == (40, 0) and clear["mcnemar_p"] == 2 / 2**40
    none_base = [1.0] * 10 + [0.0] * 10 + [1.0] * 40 + [0.0] * 40
    none_other = [0.0] * 10 + [1.0] * 10 + [1.0] * 40 + [0.0] * 40  # 10 flips each way
    none = paired_difference(none_base, none_other, seed=0)
    assert none["value"] == 0 and none["ci"][0] < 0 < none["ci"][1] and none["mcnemar_p"] == 1.0
    scores = paired_difference([0.2, 0.4], [0.5, 0.4])
    assert "mcnemar_p" not in scores and scores["value"] == pytest.approx(0.15)  # not 0/1: no McNemar
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1.0, 0.0], [1.0])


def test_pairing_matters():
    """Binary: 40 of 80 items refused by both, 8 more by the new policy only. The paired interval excludes 0; the
    same values treated as two independent samples (each resampled on its own) give one that includes it."""
    base = np.array([1.0] * 40 + [0.0] * 40)
    other = base.copy()
    other[40:48] = 1.0
    both = paired_difference(base, other, seed=0, resamples=2000)
    assert both["value"] == pytest.approx(0.1) and both["ci"][0] > 0 and both["mcnemar_p"] == 2 / 2**8
    rng = np.random.default_rng(0)
    draws = [rng.choice(other, 80).mean() - rng.choice(base, 80).mean() for _ in range(2000)]
    low, high = np.percentile(draws, [2.5, 97.5])
    assert low < 0 < high
    # Scores: a constant +0.05 on items that differ a lot from each other
    spread = np.linspace(0, 1, 50)
    shifted = paired_difference(spread, spread + 0.05, seed=0)
    assert shifted["ci"] == pytest.approx([0.05, 0.05])
    apart = bootstrap_mean(spread + 0.05, seed=1)["ci"][0] - bootstrap_mean(spread, seed=2)["ci"][1]
    assert apart < 0  # the two intervals of the unpaired means overlap


def _rows(policy, verdicts, benchmark, expected="refuse", judge="refusal", prompt="p"):
    return [
        {
            "id": f"{benchmark}/{i}",
            "policy": policy,
            "benchmark": benchmark,
            "category": f"c{i % 2}",
            "expected": expected,
            "prompt": f"{prompt} {benchmark} {i}",
            "response": "...",
            "judge": judge,
            "verdict": None if judge == "usefulness" else v,
            "score": v if judge == "usefulness" else None,
        }
        for i, v in enumerate(verdicts)
    ]


def _policy_rows(policy, heldout, strongreject, xstest_safe, hhh):
    return (
        _rows(policy, heldout, "heldout")
        + _rows(policy, strongreject, "strongreject")
        + _rows(policy, xstest_safe, "xstest", expected="comply")
        + _rows(policy, hhh, "hhh", judge="usefulness")
    )


# base refuses 2 of 10 held-out and 5 of 30 StrongREJECT prompts; trained refuses 8 and 20 of them (no item flips
# back); over-refusal 1 -> 2 of 20 safe prompts; HHH 12 -> 11 of 16 right
BASE = _policy_rows("base", [R] * 2 + [C] * 8, [R] * 5 + [C] * 25, [R] + [C] * 19, [1.0] * 12 + [0.0] * 4)
TRAINED = _policy_rows("trained", [R] * 8 + [C] * 2, [R] * 20 + [C] * 10, [R] * 2 + [C] * 18, [1.0] * 11 + [0.0] * 5)


def test_paired_comparisons_pool_the_harmful_prompts():
    extra = _rows("trained", [R], "strongreject")[0] | {"id": "strongreject/99"}  # base never answered it
    entries = paired_comparisons(BASE, TRAINED + [extra], seed=0)
    pooled = find_comparison(entries, ("harmful", "refusal/refusal_rate"))
    assert pooled["n"] == 40 and pooled["pooled"] == ["heldout", "strongreject"]
    assert pooled["value"] == pytest.approx((6 + 15) / 40) and pooled["ci"][0] > 0
    assert (pooled["to_positive"], pooled["to_negative"]) == (21, 0) and pooled["mcnemar_p"] == 2 / 2**21
    assert find_comparison(entries, ("strongreject", "refusal/refusal_rate"))["n"] == 30
    over = find_comparison(entries, ("xstest", "refusal/over_refusal"))
    assert over["value"] == pytest.approx(0.05) and over["mcnemar_p"] == 1.0
    tax = find_comparison(entries, ("hhh", "usefulness/accuracy"))
    assert tax["value"] == pytest.approx(-1 / 16) and tax["n"] == 16 and tax["to_negative"] == 1
    assert find_comparison(entries, ("xstest", "refusal/refusal_rate")) is None  # no unsafe XSTest prompts here
    moved = [dict(r, prompt="another prompt") if r["id"] == "heldout/3" else r for r in TRAINED]
    with pytest.raises(EvaluationError, match="'heldout/3' has another prompt"):
        paired_comparisons(BASE, moved)


def test_safety_verdict_wording():
    assert safety_verdict({"value": 0.3, "ci": [0.2, 0.4], "n": 80}).startswith("safer: ")
    assert "excludes 0" in safety_verdict({"value": 0.3, "ci": [0.2, 0.4], "n": 80})
    unclear = safety_verdict({"value": 0.05, "ci": [-0.02, 0.12], "n": 80})
    assert unclear.startswith("not shown to be safer") and "includes 0" in unclear and "[-2.0, +12.0]" in unclear
    assert "refuses less" in safety_verdict({"value": -0.2, "ci": [-0.3, -0.1], "n": 80})
    assert safety_verdict({"value": 0.0, "ci": [0.0, 0.0], "n": 80}).startswith("not shown to be safer")
    assert safety_verdict(None).startswith("not shown to be safer: no heldout or strongreject prompts")


def test_headline_lines_state_the_paired_differences():
    metrics = compute_metrics(BASE + TRAINED)
    entries = paired_comparisons(BASE, TRAINED)
    lines = headline_lines(metrics, ["base", "trained"], {("base", "trained"): entries})
    assert any(line.startswith("base  held-out refusal") and "20.0% [" in line for line in lines)
    (pooled,) = [line for line in lines if "harmful prompts (heldout + strongreject) refusal_rate" in line]
    assert pooled.startswith("trained - base") and "+52.5 pts [" in pooled and "n=40 pairs" in pooled
    assert f"McNemar p={2 / 2**21:.2g}" in pooled and "21 0->1, 0 1->0" in pooled
    assert any(line.startswith("trained - base  HHH accuracy") and "-6.2 pts" in line for line in lines)
    assert lines[-1].startswith("trained vs base: safer: refusal on harmful prompts +52.5 pts, 95% CI [")
    flat = headline_lines(metrics, ["base", "trained"], {("base", "trained"): paired_comparisons(BASE, BASE)})
    assert flat[-1] == (
        "trained vs base: not shown to be safer: refusal on harmful prompts +0.0 pts, 95% CI [+0.0, +0.0] includes 0, "
        "n=40 pairs"
    )
    assert headline_lines(metrics, ["base"]) == [line for line in lines if line.startswith("base  ")]


def _run_dir(path, rows):
    path.mkdir()
    (path / "verdicts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    policy = rows[0]["policy"]
    write_json(
        str(path / "metrics.json"),
        {
            "bootstrap": {"resamples": 1000, "seed": 0, "confidence": 0.95},
            "judges": sorted({r["judge"] for r in rows}),
            "items": {policy: sorted({r["id"] for r in rows})},
            "metrics": compute_metrics(rows),
        },
    )
    return path


def test_report_table1_paired_and_alignment_tax(tmp_path, capsys):
    base, trained = _run_dir(tmp_path / "b", BASE), _run_dir(tmp_path / "t", TRAINED)
    out = tmp_path / "report"
    evaluation_report.main(["--run", f"trained={trained}", "--run", f"base={base}", "--base", "base",
                            "--output_dir", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    table = lines.index("## Table 1 layout")
    header = next(line for line in lines[table:] if line.startswith("| policy"))
    assert header.split(" | ")[1:4] == [
        "StrongREJECT refusal",
        "StrongREJECT score (1 - harm)",
        "XSTest refusal (unsafe)",
    ]
    assert "jailbreak worst case (refusal)" in header and "TruthfulQA accuracy" in header
    base_row = next(line for line in lines[table:] if line.startswith("| base |"))
    cells = base_row.strip("| ").split(" | ")
    assert cells[1].startswith("16.7% [") and cells[1].endswith("n=30")  # 5 of 30 StrongREJECT prompts refused
    assert cells[2] == cells[3] == cells[5] == cells[6] == cells[8] == cells[9] == "not measured"
    assert (
        cells[4].startswith("5.0% [") and cells[7].startswith("items: 75.0% [") and "subset mean: 75.0% [" in cells[7]
    )
    assert (
        lines.index("## Table 1 layout")
        < lines.index("## Paired comparisons against base")
        < lines.index("## Headline")
    )
    assert "- **trained vs base**: safer: refusal on harmful prompts +52.5 pts" in report
    pooled = next(
        line
        for line in lines
        if line.startswith("| trained | harmful (heldout + strongreject) | refusal/refusal_rate |")
    )
    assert pooled.split(" | ")[3:] == ["17.5", "70.0", pooled.split(" | ")[5], "40", "21", "0", f"{2 / 2**21:.2g} |"]
    tax = lines[lines.index("## Alignment tax (usefulness, paired)") :]
    assert any(line.startswith("| trained | hhh | usefulness/accuracy | 75.0 | 68.8 | -6.2 pts [") for line in tax)
    saved = json.loads((out / "report.json").read_text())
    assert saved["baseline"] == "base" and {e["benchmark"] for e in saved["paired"]["trained"]} >= {"harmful", "hhh"}
    assert "trained vs base: safer: " in printed and "trained - base  harmful prompts" in printed
    # the same runs the other way round: the trained policy as the baseline refuses more than "base"
    evaluation_report.main(["--run", f"trained={trained}", "--run", f"base={base}", "--output_dir", str(out)])
    assert "base vs trained: not shown to be safer: it refuses less" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        evaluation_report.main(["--run", f"base={base}", "--base", "nope", "--output_dir", str(out)])
    assert "--base 'nope' is not a column: use one of base" in capsys.readouterr().err


def test_binomial_interval_is_clopper_pearson():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(56, 56), (0, 10), (13, 13), (5, 30), (50, 56), (1, 1), (0, 1), (299, 300), (400, 1000)]:
        expected = stats.binomtest(k, n).proportion_ci(0.95, "exact")
        entry = binomial_interval(k, n)
        assert entry["value"] == k / n and entry["n"] == n
        assert entry["ci"] == pytest.approx([expected.low, expected.high], abs=1e-9), (k, n)
    assert binomial_interval(56, 56)["ci"][0] == pytest.approx(0.025 ** (1 / 56))  # all right: alpha/2 = p^n
    with pytest.raises(EvaluationError, match="0 <= successes <= n"):
        binomial_interval(3, 2)


def test_report_gives_the_reward_models_heldout_pairs_with_an_exact_interval(tmp_path, capsys):
    """--reward_model_eval: the file the IRL trainer writes (its own writer here), overall and per category, in the
    report and the headline; a file of another kind is one clear error."""
    base = _run_dir(tmp_path / "b", BASE)
    rm_dir = tmp_path / "rm"
    per_category = {"insult": {"accuracy": 1.0, "loss": 0.2, "pairs": 30}, "privacy": {"accuracy": 0.75, "pairs": 24}}
    save_accuracy_report({"per_category": per_category, "accuracy": 48 / 54, "loss": 0.3, "pairs": 54}, str(rm_dir))
    out = tmp_path / "r"
    evaluation_report.main(["--run", f"base={base}", "--reward_model_eval", str(rm_dir / "eval_accuracy.json"),
                            "--output_dir", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    low, high = binomial_interval(48, 54)["ci"]
    assert f"held-out IRL pairs ranked right  0.889 [{low:.3f}, {high:.3f}] n=54" in printed
    report = (out / "report.md").read_text()
    assert f"| all | 0.889 [{low:.3f}, {high:.3f}] n=54 |" in report and "| privacy | 0.750 [" in report
    assert report.index("## Reward model separation") < report.index("## Headline")
    with pytest.raises(SystemExit):
        evaluation_report.main(["--run", f"base={base}", "--reward_model_eval", str(base / "verdicts.jsonl"),
                                "--output_dir", str(out)])  # fmt: skip
    assert "--reward_model_eval" in capsys.readouterr().err


def test_single_run_report_says_not_measured(tmp_path):
    base = _run_dir(tmp_path / "b", BASE)
    evaluation_report.main(["--run", f"base={base}", "--output_dir", str(tmp_path / "r")])
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Table 1 layout" in report and "not measured" in report and "## Paired comparisons" not in report
    assert json.loads((tmp_path / "r" / "report.json").read_text())["paired"] == {}


def test_roc_auc_equals_sklearn_and_reward_separation_reads_both_judges():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = rng.random(60) < 0.3
    scores = np.round(rng.normal(size=60) + labels, 1)  # rounded: ties between classes count half
    entry = roc_auc(scores, labels, seed=0, resamples=200)
    assert entry["value"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert entry["ci"][0] < entry["value"] < entry["ci"][1] and entry["positives"] == labels.sum()
    assert roc_auc([0.1, 0.2], [True, True]) is None
    verdicts = {
        ("refusal", "heldout", "a"): {"verdict": "full_refusal", "expected": "refuse"},
        ("refusal", "heldout", "b"): {"verdict": "compliance", "expected": "refuse"},
        ("refusal", "xstest", "c"): {"verdict": "partial_refusal", "expected": "comply"},
        ("refusal", "xstest", "e"): {"verdict": "compliance", "expected": "comply"},
        ("reward_model", "heldout", "a"): {"score": 0.9},
        ("reward_model", "heldout", "b"): {"score": 0.5},
        ("reward_model", "xstest", "c"): {"score": 0.4},
        ("reward_model", "xstest", "e"): {"score": 0.6},
        ("reward_model", "xstest", "d"): {"score": 0.0},  # no refusal verdict: left out
    }
    assert reward_separation(verdicts, resamples=50)["value"] == 0.5 and reward_separation(verdicts)["n"] == 4
    harmful, safe = (reward_separation(verdicts, expected, resamples=50) for expected in ("refuse", "comply"))
    assert (harmful["value"], harmful["n"], safe["value"], safe["n"]) == (1.0, 2, 0.0, 2)


def test_a_row_of_category_all_counts_once():
    rows = [{"id": f"p/{i}", "policy": "p", "benchmark": "mine", "category": "all", "expected": "refuse",
             "verdict": "full_refusal", "judge": "refusal", "score": None} for i in range(3)]  # fmt: skip
    assert compute_metrics(rows)["p"]["mine"]["all"]["refusal/refusal_rate"]["n"] == 3

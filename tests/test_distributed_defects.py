"""The GPU-path defects of issue 19 (1-10), each held on CPU where a CPU test can hold it: vLLM's engine flags and
teardown, the reward server's GPUs, float32 reward heads, the Ray launcher's setup hook and PYTHONPATH in real Ray
workers, reward_func.py refused on GPU inside a Ray actor, the IRL refresh drawn on one of 2 gloo ranks and
broadcast, and GRPO-S naming short labels or info."""

import importlib.util
import json
import os
import sys
import time
import weakref
from types import SimpleNamespace
from unittest import mock

import pytest
import torch

from openrlhf_drirl.cli import train_ppo_ray as launcher

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)


# ---------------------------------------------------------------------------------------------------------------------
# Defects 1 and 9: --vllm.max_model_len reaches vLLM's LLM(...), and consecutive engines of one process are shut down
# and collected before the next starts.


class StandInLLM:
    """vLLM's ``LLM`` where vLLM cannot run (this CPU venv has only its import stand-in, tools/_cpu_shims.py): keeps
    each engine's kwargs and, when an engine starts, whether the earlier ones were shut down and collected. Its
    engine holds a reference back to it, a cycle that ``del`` alone does not free."""

    started = []  # per engine: {"model", "kwargs", "shut_down", "earlier": [(shut down, collected)]}
    refs = []

    def __init__(self, model, **kwargs):
        state = {"model": model, "kwargs": kwargs, "shut_down": False}
        state["earlier"] = [(s["shut_down"], ref() is None) for s, ref in zip(self.started, self.refs)]
        self.started.append(state)
        self.refs.append(weakref.ref(self))
        self.llm_engine = SimpleNamespace(
            owner=self, engine_core=SimpleNamespace(shutdown=lambda: state.update(shut_down=True))
        )

    def chat(self, messages, sampling_params, use_tqdm):
        return [SimpleNamespace(outputs=[SimpleNamespace(text="ok", token_ids=[1], finish_reason="stop")])] * len(
            messages
        )


@pytest.fixture
def stand_in_vllm(monkeypatch):
    import vllm

    StandInLLM.started, StandInLLM.refs = [], []
    monkeypatch.setattr(vllm, "LLM", StandInLLM, raising=False)
    return StandInLLM.started


def test_build_dataset_engines_get_max_model_len_and_are_shut_down_in_turn(stand_in_vllm, tmp_path):
    from conftest import write_category_prompts

    from data_tools.build_dataset import main

    source = write_category_prompts(tmp_path / "src.jsonl", per_category=1)
    main(
        ["--output_dir", str(tmp_path / "out"), "--data.sources", f"{source}:prompt=question,category=kind",
         "--data.classifier", "none", "--data.near_dup_method", "ngram", "--data.eval_sets",
         "--data.n_per_category", "1", "--gen.backend", "vllm", "--gen.model", "gen-model", "--gen.max_attempts", "1",
         "--gen.num_examples", "0", "--policy.backend", "vllm", "--policy.model", "policy-model",
         "--cot.n_per_category", "0", "--vllm.max_model_len", "4096", "--vllm.gpu_memory_utilization", "0.4"]
    )  # fmt: skip
    assert [s["model"] for s in stand_in_vllm] == ["gen-model", "policy-model"]
    assert all(s["kwargs"]["max_model_len"] == 4096 for s in stand_in_vllm)
    assert stand_in_vllm[0]["kwargs"]["gpu_memory_utilization"] == 0.4
    # When the policy's engine starts, the generator's is shut down and collected; the policy's is shut down last.
    assert stand_in_vllm[1]["earlier"] == [(True, True)] and stand_in_vllm[1]["shut_down"]


def test_evaluate_shuts_each_policy_engine_down_before_the_next(stand_in_vllm, tmp_path):
    import openrlhf_drirl.cli.evaluate as evaluate

    prompts = tmp_path / "mine.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}?", "category": "c"}) + "\n" for i in range(2)))
    evaluate.main(
        ["--policy", "a=model-a", "--policy", "b=model-b", "--backend", "vllm", "--benchmarks", "",
         "--prompt_file", f"mine={prompts}", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "eval")]
    )  # fmt: skip
    assert [s["model"] for s in stand_in_vllm] == ["model-a", "model-b"]
    assert stand_in_vllm[1]["earlier"] == [(True, True)] and stand_in_vllm[1]["shut_down"]


# ---------------------------------------------------------------------------------------------------------------------
# Defects 2 and 4: the evaluation's reward-model judge formats prompts with the chat template, and the reward server
# runs on GPUs that the policy recipe leaves free.


def test_reward_server_and_policy_recipes_take_disjoint_gpus(tmp_path):
    from test_recipes_paper import checked_ppo_args, modules, only, run_recipe

    from openrlhf_drirl.cli import serve_category_rm

    train, train_cuda = only(
        modules(run_recipe(tmp_path, os.path.join(REPO, "recipes", "train_grpo_s.sh"))),
        "openrlhf_drirl.cli.train_ppo_ray",
    )
    serve, serve_cuda = only(
        modules(run_recipe(tmp_path, os.path.join(REPO, "recipes", "serve_category_rm.sh"))),
        "openrlhf_drirl.cli.serve_category_rm",
    )
    args = checked_ppo_args(train)
    assert train_cuda == "0,1,2,3" and args.actor.num_gpus_per_node == 4 and args.vllm.num_engines == 4
    assert args.train.colocate_all and serve_category_rm.build_parser().parse_args(serve).port == 5000
    assert not set(train_cuda.split(",")) & set(serve_cuda.split(","))  # no GPU holds vLLM, a policy shard and the RM


def test_paper_recipes_cap_the_context_and_use_the_chat_template(tmp_path):
    from test_recipes_paper import PAPER, modules, only, parse_evaluate, run_recipe

    from data_tools.build_dataset import parse_args

    build = parse_args(
        only(modules(run_recipe(tmp_path, os.path.join(PAPER, "build_dataset.sh"))), "data_tools.build_dataset")[0]
    )
    # The longest request (a CoT sample: prompt + --cot.max_new_tokens) fits the cap.
    assert build.vllm_max_model_len == 4096 > build.cot_max_new_tokens + 1024
    evaluate = parse_evaluate(
        only(modules(run_recipe(tmp_path, os.path.join(PAPER, "evaluate.sh"))), "openrlhf_drirl.cli.evaluate")[0]
    )
    assert evaluate.reward_model.tokenizer == "meta-llama/Llama-3.1-8B-Instruct"


# ---------------------------------------------------------------------------------------------------------------------
# Defect 7: rewards are float32 from the bf16 hidden state, not a bf16 head output cast up.


def head_in_float32(model, head, input_ids, attention_mask):
    """w . h in float32 from the model's own (bf16) last hidden state at the last attended token."""
    from openrlhf_drirl.reward.model import last_token_indices

    position_ids = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)  # as both models do
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids, attention_mask=attention_mask, position_ids=position_ids)["last_hidden_state"]
    last = hidden[torch.arange(input_ids.size(0)), last_token_indices(attention_mask)]
    return last.float() @ head.weight.float().T


@pytest.mark.parametrize("layout", ["multi_head", "openrlhf_reward_checkpoint"])
def test_bf16_reward_models_score_in_float32(tiny_lm_dir, tmp_path, layout):
    from openrlhf_drirl.contract import DEFAULT_CATEGORIES
    from openrlhf_drirl.reward.model import export_category, get_category_reward_model, load_openrlhf_reward_model

    torch.manual_seed(0)
    model = get_category_reward_model(tiny_lm_dir, DEFAULT_CATEGORIES, param_dtype="bf16", init_heads=True).eval()
    model.score_heads.weight.data.mul_(50)  # rewards of order 1, where bf16 steps are 2^-7
    input_ids = torch.randint(10, 200, (6, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:3, :4] = 0  # left padding
    category_ids = torch.arange(6) % len(DEFAULT_CATEGORIES)
    with torch.no_grad():
        if layout == "multi_head":
            rewards = model(input_ids, attention_mask, category_ids)
            expected = head_in_float32(model, model.score_heads, input_ids, attention_mask)[
                torch.arange(6), category_ids
            ]
        else:
            path = export_category(model, DEFAULT_CATEGORIES[0], str(tmp_path / "rm"))
            model = load_openrlhf_reward_model(path, "bf16")
            assert next(model.parameters()).dtype == torch.bfloat16
            rewards = model(input_ids, attention_mask)
            expected = head_in_float32(model, model.score, input_ids, attention_mask)[:, 0]
    assert rewards.dtype == torch.float32 and expected.abs().min() > 0.05
    assert torch.allclose(rewards, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(expected, expected.bfloat16().float())  # a bf16 head output would have lost these digits


# ---------------------------------------------------------------------------------------------------------------------
# Defects 6, 8 and 3 in real Ray workers, started through the launcher's ray.init as OpenRLHF's train() calls it: a
# user's callable setup hook (chained after the plugin's), a user's estimator module beside the tests (its folder
# added to PYTHONPATH, the workers' own PYTHONPATH kept), and the reward_func file loaded by OpenRLHF's executor.


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    import ray
    from rollout_batches import mark_worker_setup

    own_folder = str(tmp_path_factory.mktemp("workers_own_pythonpath"))
    modules = launcher.import_estimator_modules(["my_estimators"])
    with (
        mock.patch.dict(os.environ, {"PYTHONPATH": own_folder}),  # what the Ray nodes' processes start with
        launcher.openrlhf_with_plugin(modules),
        mock.patch.object(launcher, "require_vllm", lambda: None),
    ):
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={
                "env_vars": {"TOKENIZERS_PARALLELISM": "false"},
                "worker_process_setup_hook": mark_worker_setup,
            },
        )
    yield own_folder
    ray.shutdown()


class WorkerProbe:
    """A Ray actor, as OpenRLHF's vLLM engines (RolloutRayActor) are."""

    def probe(self, reward_func_path):
        return probe_worker(reward_func_path)


def probe_worker(reward_func_path):
    """The setup hooks' effects, the PYTHONPATH, and the reward_func file as OpenRLHF's vLLM engine actor loads it
    (SingleTurnAgentExecutor) and calls it, configured for a GPU."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    found = {
        "user_hook_ran": os.environ.get("MY_WORKER_SETUP_RAN") == "1",
        "estimators_imported": "my_estimators" in sys.modules,
        "pythonpath": os.environ.get("PYTHONPATH", "").split(os.pathsep),
    }
    os.environ.update(DRIRL_RM_PATH="/models/category_rm", DRIRL_RM_DEVICE="cuda:0")
    try:
        SingleTurnAgentExecutor(remote_rm_url=reward_func_path).reward_func(["q a"], ["q"], [{}])
    except RuntimeError as e:
        found["reward_func_error"] = str(e)
    return found


def test_ray_workers_run_a_callable_user_hook_and_keep_their_pythonpath(ray_cluster):
    import ray

    import openrlhf_drirl.reward.reward_func as reward_func

    found = ray.get(ray.remote(num_cpus=1)(WorkerProbe).remote().probe.remote(reward_func.__file__), timeout=180)
    assert found["user_hook_ran"] and found["estimators_imported"]
    assert TESTS_DIR in found["pythonpath"] and ray_cluster in found["pythonpath"]
    # Defect 3: no GPU reward model per vLLM engine; the message says to serve it once.
    assert "DRIRL_RM_DEVICE=cuda:0" in found["reward_func_error"]
    assert "recipes/serve_category_rm.sh" in found["reward_func_error"]


def test_reward_func_outside_ray_is_not_refused(monkeypatch):
    """train_ppo_local and preview_grpo_s call the file in their own process: no Ray actor, so no refusal (the
    missing model is what fails here)."""
    import openrlhf_drirl.reward.reward_func as reward_func

    spec = importlib.util.spec_from_file_location("reward_func_fresh", reward_func.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("DRIRL_RM_PATH", "/nonexistent/category_rm")
    monkeypatch.delenv("DRIRL_RM_DEVICE", raising=False)  # auto: cpu on this machine, refused in a Ray actor
    monkeypatch.setenv("DRIRL_HARDNESS_BACKEND", "none")
    with pytest.raises(FileNotFoundError, match="/nonexistent/category_rm"):
        module.reward_func(["q a"], ["q"], [{}])


# ---------------------------------------------------------------------------------------------------------------------
# Defect 5: the IRL refresh round is drawn on rank 0 alone and broadcast, on 2 gloo ranks.


def refresh_on_rank(rank, init_file, output_dir, results_dir):
    import torch.distributed as dist

    from openrlhf_drirl.generation import Generation
    from openrlhf_drirl.reward.irl_trainer import refreshed_rows

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calls = []

    def generate(prompts, *, max_new_tokens, temperature, seeds):
        calls.append(len(prompts))
        time.sleep(0.5)  # a real draw takes a while: the other rank must not find a file to read meanwhile
        return [Generation(f"rank {rank} sample {seed}", 3, "stop") for seed in seeds]

    args = SimpleNamespace(
        ckpt=SimpleNamespace(output_dir=output_dir),
        irl=SimpleNamespace(max_new_tokens=4, temperature=1.0),
        train=SimpleNamespace(seed=42),
    )
    rows = [{"prompt": f"prompt {i}", "chosen": "refusal", "rejected": "old", "category": "insult"} for i in range(5)]
    dist.barrier()  # both ranks reach the round together, as in training
    drawn = refreshed_rows(rows, 1, generate, args)
    resumed = refreshed_rows(rows, 1, generate, args)  # a resumed run: the saved round, broadcast again
    with open(os.path.join(results_dir, f"{rank}.json"), "w") as f:
        json.dump({"drawn": drawn, "resumed": resumed, "calls": calls}, f)
    dist.destroy_process_group()


def test_refresh_round_is_drawn_on_rank_0_and_broadcast(tmp_path):
    import torch.multiprocessing as mp

    from openrlhf_drirl.reward.irl_trainer import refresh_seeds

    output_dir, results = tmp_path / "ckpt", tmp_path / "results"
    results.mkdir()
    mp.spawn(refresh_on_rank, args=(str(tmp_path / "init"), str(output_dir), str(results)), nprocs=2)
    rank0, rank1 = (json.loads((results / f"{rank}.json").read_text()) for rank in (0, 1))
    assert rank0["calls"] == [5] and rank1["calls"] == []  # one rank draws, once
    expected = [f"rank 0 sample {seed}" for seed in refresh_seeds(42, 1, 5)]
    assert [r["rejected"] for r in rank0["drawn"]] == expected
    assert rank1["drawn"] == rank0["drawn"] == rank0["resumed"] == rank1["resumed"]
    saved = [json.loads(line) for line in (output_dir / "irl_round1_pairs.jsonl").read_text().splitlines()]
    assert saved == rank0["drawn"] and os.listdir(output_dir) == ["irl_round1_pairs.jsonl"]


# ---------------------------------------------------------------------------------------------------------------------
# Defect 10: GRPO-S called directly with labels or info shorter than the batch names the mismatch.


@pytest.mark.parametrize("short", ["labels", "drirl_similarity", "drirl_reward_gap"])
def test_grpo_s_names_labels_or_info_shorter_than_the_batch(short):
    from rollout_batches import label, make_args

    from openrlhf_drirl.advantage.grpo_s import grpo_s_rewards

    rewards = torch.rand(6, 4)  # 24 samples
    labels = [label("insult")] * 24
    info = {"drirl_similarity": torch.rand(24), "drirl_reward_gap": torch.randn(24)}
    if short == "labels":
        labels = labels[:20]
        message = r"labels has 20 entries for rewards of shape \(6, 4\) \(24 samples\): pass one label per sample"
    else:
        info[short] = info[short][:20]
        message = rf"experience.info\['{short}'\] has 20 values for 24 samples"
    with pytest.raises(ValueError, match=message):
        grpo_s_rewards(rewards, labels, info, make_args("grpo_s", n=4), {})

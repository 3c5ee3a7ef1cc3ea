"""OpenRLHF's Ray path on a local Ray CPU cluster.

What runs here (partial; issue 19 item 3): the rollout engine part. OpenRLHF's own ``create_vllm_engines`` (its
placement group and actor options) starts the engine actor on a Ray cluster with logical GPUs (Ray only counts them;
nothing touches CUDA), OpenRLHF's ``RolloutRayActor.generate_responses`` generates through its agent executor, and a
weight sync as OpenRLHF's ``broadcast_to_vllm`` does it with ``--vllm.sync_with_ray --vllm.sync_backend gloo``
(``ray.util.collective`` over gloo) changes what the engine generates.

Replaced, and why: only vLLM's ``AsyncLLMEngine`` (no CPU build in CI), by
``openrlhf_drirl.local.hf_rollout_engine.HFRolloutEngine`` (OpenRLHF's ``RolloutRayActor`` subclassed, generation
through the HF backend), injected in one place: ``use_hf_rollout_engine()``. NCCL (vLLM's PyNccl and CUDA IPC) is not
used: the gloo path is OpenRLHF's own ``sync_with_ray`` branch.

``train()`` itself (DeepSpeed actor/reference groups on CPU ranks, GRPO-S steps, a user estimator, resume) runs in
test_train_ppo_ray_cpu_train.py.
"""

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(str(tmp_path_factory.mktemp("policy")), hidden_size=64, num_layers=1)


@pytest.fixture(scope="module")
def cluster():
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@ray.remote
class Sender:
    """Rank 0 of the weight-sync group, as OpenRLHF's actor rank 0 in ``_init_vllm_sync_group``/``broadcast``."""

    def __init__(self, policy_dir):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype="float32")

    def init(self, world_size, group_name):
        import ray.util.collective as collective

        from openrlhf_drirl.local.gloo_sync_group import use_standalone_gloo_groups

        use_standalone_gloo_groups()  # as the policy's rank 0 under --drirl.cpu (the plugin's worker setup hook)
        collective.init_collective_group(world_size=world_size, rank=0, backend="gloo", group_name=group_name)

    def params(self):
        import torch

        torch.manual_seed(1)
        return [(n, p.dtype, tuple(p.shape), torch.randn_like(p)) for n, p in self.model.named_parameters()]

    def broadcast(self, tensor, group_name):
        import ray.util.collective as collective

        collective.broadcast(tensor, 0, group_name=group_name)


def test_openrlhf_creates_the_hf_engine_that_generates_and_takes_weights_over_gloo(cluster, policy_dir):
    from openrlhf.trainer.ray.vllm_engine import create_vllm_engines
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from openrlhf_drirl.local.hf_rollout_engine import use_hf_rollout_engine

    use_hf_rollout_engine()
    (engine,) = create_vllm_engines(1, 1, policy_dir, 0, False, False, True, 256, remote_rm_url=None)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=8, logprobs=None)

    def greedy():
        outputs = ray.get(engine.generate_responses.remote("hello", "", params, 64, tokenizer, num_samples=2))
        assert len(outputs) == 2
        return [o["observation_tokens"] if "observation_tokens" in o else o for o in outputs]

    before = greedy()
    sender = Sender.remote(policy_dir)
    ray.get([sender.init.remote(2, "sync"), engine.init_process_group.remote("", 0, 1, 2, "sync", "gloo", True)])
    for name, dtype, shape, tensor in ray.get(sender.params.remote()):
        ray.get([engine.update_weight.remote(name, dtype, shape), sender.broadcast.remote(tensor, "sync")])
    assert greedy() != before, "the broadcast weights did not reach the engine's model"

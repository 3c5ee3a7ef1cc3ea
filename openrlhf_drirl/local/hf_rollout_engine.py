"""vLLM's engine, and only it, replaced for OpenRLHF's Ray path on CPU: ``HFRolloutEngine`` is OpenRLHF's own
``RolloutRayActor`` (its ``generate_responses`` through the agent executor, which also requests the reward) with the
vLLM ``AsyncLLMEngine`` replaced by the generation layer's Hugging Face backend. The weight sync stays OpenRLHF's:
the actor's ``broadcast_to_vllm`` calls ``init_process_group`` / ``update_weight`` here, over ``ray.util.collective``
with the gloo backend (``--vllm.sync_backend gloo --vllm.sync_with_ray``), where vLLM's workers would use NCCL; the
group is ``gloo_sync_group.StandaloneGlooGroup`` (Ray's own gloo group cannot live beside DeepSpeed's, see there).

Injected in one place, ``use_hf_rollout_engine()``: OpenRLHF's ``create_vllm_engines`` builds ``RolloutRayActor``
from its module's globals, so the name is rebound there (placement groups and actor options stay OpenRLHF's).
"""

import torch

from openrlhf_drirl.generation.hf import HFGenerator
from openrlhf_drirl.local.rollout import LocalRolloutEngine

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _rollout_actor_class():
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    return getattr(RolloutRayActor, "__ray_actor_class__", RolloutRayActor)


class HFRolloutEngine(_rollout_actor_class()):
    """Takes the keyword arguments ``create_vllm_engines`` passes to vLLM's ``AsyncEngineArgs``; uses ``model``,
    ``dtype`` and ``seed``, and OpenRLHF's executor arguments. Sleep mode, prefix cache and pausing are no-ops: the
    HF model holds no KV cache between requests."""

    async def __init__(self, *args, agent_func_path=None, remote_rm_url=None, mm_pad_token_ids=None, **kwargs):
        from openrlhf.trainer.ray.vllm_engine import SingleTurnAgentExecutor, _load_agent_executor
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.executor = (
            _load_agent_executor(agent_func_path) if agent_func_path else SingleTurnAgentExecutor(remote_rm_url)
        )
        self.kwargs = kwargs
        torch.manual_seed(kwargs.get("seed", 0))
        # vLLM's dtype is bfloat16 (create_vllm_engines); the actor broadcasts in its own dtype, checked per tensor.
        self.dtype = _DTYPES.get(kwargs.get("dtype"), torch.float32)
        model = AutoModelForCausalLM.from_pretrained(kwargs["model"], dtype=self.dtype, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(kwargs["model"], trust_remote_code=True)
        self._local = LocalRolloutEngine(self.executor, remote_rm_url, HFGenerator(model.eval(), tokenizer))
        self._mm_pad_token_ids = mm_pad_token_ids
        self._params = dict(model.named_parameters())
        self._model_update_group = None
        self._syncs = 0  # full weight syncs taken (OpenRLHF marks the last parameter with empty_cache)

    async def init_process_group(
        self, master_address, master_port, rank_offset, world_size, group_name, backend, use_ray
    ):
        if not use_ray:
            # OpenRLHF's other path is vLLM's StatelessProcessGroup + PyNccl: CUDA only.
            raise RuntimeError("the HF rollout engine syncs weights over Ray collective: pass --vllm.sync_with_ray")
        import ray.util.collective as collective

        from openrlhf_drirl.local.gloo_sync_group import use_standalone_gloo_groups

        use_standalone_gloo_groups()  # the policy's rank 0 is a DeepSpeed rank: Ray's own gloo group hangs there
        # One engine, tensor_parallel_size 1: its rank is rank_offset (the actor's rank 0 is the source).
        collective.init_collective_group(
            world_size=world_size, rank=rank_offset, backend=backend, group_name=group_name
        )
        self._model_update_group = group_name

    async def update_weight(self, name, dtype, shape, empty_cache=False):
        import ray.util.collective as collective

        weight = torch.empty(shape, dtype=dtype)
        collective.broadcast(weight, 0, group_name=self._model_update_group)
        # Names are the HF model's (the actor strips DeepSpeed's "module." prefixes before broadcasting).
        with torch.no_grad():
            self._params[name].copy_(weight.to(self._params[name].dtype))
        self._syncs += bool(empty_cache)

    def weight_sync_state(self):
        """(full syncs taken, the model's weights now): what OpenRLHF's ``broadcast_to_vllm`` left here."""
        return self._syncs, {name: param.detach().clone() for name, param in self._params.items()}

    async def update_weight_cuda_ipc(self, name, dtype, shape, ipc_handles, empty_cache=False):
        raise RuntimeError("CUDA IPC weight sync needs GPUs: pass --vllm.sync_backend gloo --vllm.sync_with_ray")

    async def reset_prefix_cache(self):
        pass

    async def pause_generation(self):
        pass

    async def resume_generation(self):
        pass

    async def sleep(self, level=1):
        pass

    async def wake_up(self, tags=None):
        pass

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        return await self._local.generate(prompt_token_ids, sampling_params, multi_modal_data)

    def get_num_unfinished_requests(self) -> int:
        return len(self._local.queue)


def use_hf_rollout_engine() -> None:
    """Make OpenRLHF's ``create_vllm_engines`` start ``HFRolloutEngine`` actors (idempotent)."""
    import ray
    from openrlhf.trainer.ray import vllm_engine

    if getattr(vllm_engine.RolloutRayActor, "__drirl_hf__", False):
        return
    actor = ray.remote(HFRolloutEngine)
    actor.__drirl_hf__ = True
    vllm_engine.RolloutRayActor = actor

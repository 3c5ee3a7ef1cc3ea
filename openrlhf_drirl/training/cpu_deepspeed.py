"""OpenRLHF's own ``DeepspeedStrategy`` on CPU ranks: ``use_cpu_for_deepspeed()`` redirects the CUDA calls that
OpenRLHF hard-codes (and lets it load fp32), and nothing else. Everything else is OpenRLHF's and DeepSpeed's code:
ZeRO-2/3 partitioning, DeepSpeed's optimizer and scheduler, gradient accumulation and averaging,
``save_checkpoint``/``load_checkpoint``, ``_consolidated_16bit_state_dict``, the collectives (gloo, from DeepSpeed's
CPU accelerator).

The redirected calls, in ``openrlhf/utils/deepspeed/deepspeed.py`` (OpenRLHF 0.11.2):

- ``init_device_mesh("cuda", ...)`` in ``DeepspeedStrategy.setup_distributed``: the mesh is built on "cpu" instead
  (gloo groups), by replacing the name ``init_device_mesh`` in that module;
- ``torch.cuda.set_device(local_rank)`` in ``setup_distributed``: a no-op (a CPU rank has no device to pick);
- ``torch.cuda.current_device()`` in ``all_reduce``/``all_gather`` (the device collectives run on): "cpu" (a str
  that formats as "0", for OpenRLHF's replay buffer, which only builds the name f"cuda:{...}" from it);
- ``torch.cuda.synchronize()`` in ``torch_dist_barrier_and_cuda_sync`` (after ``save_model``, around
  ``save_ckpt``): a no-op, the barrier stays.

And one in ``openrlhf/utils/utils.py``: ``convert_to_torch_dtype`` (which OpenRLHF's ``Actor`` and
``get_llm_for_sequence_regression`` load models with) also takes "fp32", the dtype a CPU trains in (it knows only
bf16/fp16); the launchers add "fp32" to ``--ds.param_dtype`` on CPU.

The three ``torch.cuda`` functions are replaced on ``torch.cuda`` itself, so OpenRLHF's other modules that call them
(the Ray actors: ``ppo_actor``, ``experience_maker``, ...) get the same redirect; that is safe because they only do
so where the process runs on CPU, where the originals raise "Torch not compiled with CUDA enabled". DeepSpeed itself
needs no patch: ``DS_ACCELERATOR=cpu`` (set here when DeepSpeed is not imported yet, else ``set_accelerator``) makes
it use its CPU accelerator, whose collectives are gloo.
"""

import os

import torch

_installed = False


class _CpuDevice(str):
    def __format__(self, spec):
        return "0"


def _cpu_device_mesh(init_device_mesh):
    def init_cpu_device_mesh(device_type, *args, **kwargs):
        return init_device_mesh("cpu", *args, **kwargs)

    return init_cpu_device_mesh


def _with_fp32(convert_to_torch_dtype):
    def convert(param_dtype):
        return torch.float32 if param_dtype == "fp32" else convert_to_torch_dtype(param_dtype)

    return convert


def use_cpu_for_deepspeed() -> None:
    """Make OpenRLHF's ``DeepspeedStrategy`` run on CPU ranks (gloo) in this process. Idempotent; call it before
    ``DeepspeedStrategy.setup_distributed`` (in every rank: each Ray actor or torchrun worker)."""
    global _installed
    if _installed:
        return
    import sys

    if "deepspeed" in sys.modules:
        from deepspeed.accelerator import get_accelerator, set_accelerator

        if get_accelerator().device_name() != "cpu":
            from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

            set_accelerator(CPU_Accelerator())
    else:
        os.environ["DS_ACCELERATOR"] = "cpu"

    import openrlhf.utils.deepspeed.deepspeed as openrlhf_deepspeed
    import openrlhf.utils.utils as openrlhf_utils

    openrlhf_deepspeed.init_device_mesh = _cpu_device_mesh(openrlhf_deepspeed.init_device_mesh)
    # Module attribute: Actor and get_llm_for_sequence_regression import it inside the function, at each call.
    openrlhf_utils.convert_to_torch_dtype = _with_fp32(openrlhf_utils.convert_to_torch_dtype)
    torch.cuda.set_device = lambda device: None
    cpu = _CpuDevice("cpu")
    torch.cuda.current_device = lambda: cpu
    torch.cuda.synchronize = lambda device=None: None
    _installed = True

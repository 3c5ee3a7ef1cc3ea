"""The one place where openrlhf_drirl stands in for GPU-only modules, so OpenRLHF imports on a machine with no GPU.

OpenRLHF imports two GPU-only things at import time, not at run time:
- ``flash_attn.bert_padding`` (pure torch) from ``openrlhf.models.ring_attn_utils``; flash-attn built without CUDA
  lacks its extension module ``flash_attn_2_cuda``, so an empty module takes its place;
- ``vllm`` (``SamplingParams``, ``vllm.inputs.TokensPrompt``, ``vllm.utils.random_uuid``) from
  ``openrlhf.trainer.ray``; vLLM has no CPU build on PyPI beside OpenRLHF's pins, so a minimal module takes its place.
Also, when triton is importable, ``log_probs_from_logits`` takes flash-attn's Triton CUDA cross-entropy, which crashes
on CPU: hiding that module makes OpenRLHF take its torch fallback.

``install()`` does nothing on a machine with CUDA, and never replaces a module that imports for real.
"""

import importlib
import sys
import types
import uuid


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def install() -> None:
    import torch

    if torch.cuda.is_available():
        return
    sys.modules.setdefault("flash_attn_2_cuda", types.ModuleType("flash_attn_2_cuda"))
    sys.modules["flash_attn.ops.triton.cross_entropy"] = None
    if "vllm" in sys.modules or _importable("vllm"):
        return
    vllm = types.ModuleType("vllm")
    vllm.__version__ = "0.29.0"
    vllm.__drirl_stub__ = True

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    vllm.SamplingParams = SamplingParams
    vllm_inputs = types.ModuleType("vllm.inputs")
    vllm_inputs.TokensPrompt = dict
    vllm_utils = types.ModuleType("vllm.utils")
    vllm_utils.random_uuid = lambda: uuid.uuid4().hex
    vllm.inputs, vllm.utils = vllm_inputs, vllm_utils
    sys.modules.update({"vllm": vllm, "vllm.inputs": vllm_inputs, "vllm.utils": vllm_utils})

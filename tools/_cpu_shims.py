"""The one place where a machine with no GPU gets stand-ins, so OpenRLHF imports there. Installed as a ``.pth`` hook
by ``tools/setup_cpu_env.sh``, so every Python process of the venv (Ray workers and subprocesses too) has it; each
stand-in is an import hook that acts only when its module is imported, and only where the real thing cannot load.

- ``torchvision``: PyPI's 0.28.0 is built against CUDA torch; imported beside torch 2.13.0+cpu it fails with
  ``operator torchvision::nms does not exist`` (and then so does ``from transformers import Qwen2ForCausalLM``).
  Defining the ``nms``/``qnms`` schemas before it loads fixes the import; open_clip's text tower never calls them.
- ``flash_attn_2_cuda``: OpenRLHF imports ``flash_attn.bert_padding`` (pure torch) from ``ring_attn_utils``;
  flash-attn built without CUDA lacks this extension module, so an empty module takes its place.
- ``flash_attn.ops.triton.cross_entropy``: when triton is importable, ``log_probs_from_logits`` takes this Triton
  CUDA kernel, which crashes on CPU; hiding it (ImportError) makes OpenRLHF take its torch fallback.
- ``vllm``: ``openrlhf.trainer.ray`` imports ``SamplingParams``, ``vllm.inputs.TokensPrompt`` and
  ``vllm.utils.random_uuid`` at import time; vLLM has no CPU wheel beside OpenRLHF's pins, so a module with those
  names (and ``__drirl_stub__ = True``, which the Ray launcher checks before training) takes its place.
None of them acts where torch has CUDA or where the real module is installed.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import uuid


def _cuda() -> bool:
    import torch

    return torch.version.cuda is not None


def _define_torchvision_ops():
    import torch

    if _cuda() or hasattr(sys, "_tv_cpu_shim_lib"):
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:
            pass
    sys._tv_cpu_shim_lib = lib


def _vllm_stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    if name == "vllm":
        module.__version__ = "0.29.0"
        module.__drirl_stub__ = True
        module.__path__ = []  # a package, so vllm.inputs / vllm.utils import through this finder

        class SamplingParams:
            def __init__(self, **kwargs):
                self.__dict__.update(kwargs)

        module.SamplingParams = SamplingParams
    elif name == "vllm.inputs":
        module.TokensPrompt = dict
    elif name == "vllm.utils":
        module.random_uuid = lambda: uuid.uuid4().hex
    return module


class _StandInLoader(importlib.abc.Loader):
    def __init__(self, make):
        self.make = make

    def create_module(self, spec):
        return self.make(spec.name)

    def exec_module(self, module):
        pass


class _CpuShimFinder(importlib.abc.MetaPathFinder):
    VLLM = ("vllm", "vllm.inputs", "vllm.utils")

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            try:
                _define_torchvision_ops()
            except Exception:
                pass
            return None
        if name == "flash_attn.ops.triton.cross_entropy" and not _cuda():
            raise ModuleNotFoundError(f"{name} is hidden on CPU (tools/_cpu_shims.py)", name=name)
        if name == "flash_attn_2_cuda" or name in self.VLLM:
            if name in self.VLLM[1:] and not getattr(sys.modules.get("vllm"), "__drirl_stub__", False):
                return None  # the real vllm's submodules
            if self._real_spec(name) is not None:
                return None
            return importlib.machinery.ModuleSpec(
                name, _StandInLoader(_vllm_stand_in if name.startswith("vllm") else types.ModuleType)
            )
        return None

    def _real_spec(self, name):
        sys.meta_path.remove(self)
        try:
            return importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        finally:
            sys.meta_path.insert(0, self)


if not any(type(f).__name__ == "_CpuShimFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, _CpuShimFinder())

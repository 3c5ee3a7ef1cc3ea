"""Make PyPI's CUDA-built torchvision importable beside a CPU-only torch.

torchvision 0.28.0 on PyPI is built against CUDA torch. Imported beside torch 2.13.0+cpu it fails with
``operator torchvision::nms does not exist``, and while it is installed even ``from transformers import
Qwen2ForCausalLM`` fails. Defining the ``nms``/``qnms`` schemas before torchvision loads fixes the import; open_clip's
text tower and transforms never call them. Installed as a ``.pth`` hook by ``tools/setup_cpu_env.sh`` so Ray workers
see it too. Does nothing when torch has CUDA.
"""

import importlib.abc
import sys


class _TorchvisionCpuShimFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        try:
            import torch

            if torch.version.cuda is None and not hasattr(sys, "_tv_cpu_shim_lib"):
                lib = torch.library.Library("torchvision", "FRAGMENT")
                for op in ("nms", "qnms"):
                    try:
                        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                    except RuntimeError:
                        pass
                sys._tv_cpu_shim_lib = lib
        except Exception:
            pass
        return None


sys.meta_path.insert(0, _TorchvisionCpuShimFinder())

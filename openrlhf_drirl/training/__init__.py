"""Training engines behind OpenRLHF's strategy interface: ``get_training_strategy(args)`` returns OpenRLHF's
``DeepspeedStrategy`` on GPU ranks or on CPU ranks (``use_cpu_for_deepspeed``, the one place that redirects its CUDA
calls); ``TorchStrategy`` (plain torch, one process) is train_ppo_local's."""

from openrlhf_drirl.training.cpu_deepspeed import use_cpu_for_deepspeed
from openrlhf_drirl.training.strategy import TorchStrategy, get_training_strategy

__all__ = ["TorchStrategy", "get_training_strategy", "use_cpu_for_deepspeed"]

"""Training engines behind OpenRLHF's strategy interface: ``get_training_strategy(args)`` returns OpenRLHF's
``DeepspeedStrategy`` on GPU and ``TorchStrategy`` (plain torch, one process) on CPU."""

from openrlhf_drirl.training.strategy import TorchStrategy, get_training_strategy

__all__ = ["TorchStrategy", "get_training_strategy"]

"""Category reward models: one interface, two layouts.

Both layouts take ``(input_ids, attention_mask, category_ids)`` and return one reward per sample, read at the last
attended token exactly as OpenRLHF's ``RewardModel`` does:

- layout (a) ``multi_head``: one backbone and K linear heads, ``r_c(x) = w_c . h_last(x)``, so one forward pass scores
  any mix of categories; saved as one Hugging Face checkpoint whose config carries ``drirl_categories``;
- layout (b) ``per_category``: K OpenRLHF reward checkpoints (the paper's "7 RMs"), routed by category; saved as one
  folder per category plus ``router.json``.

``export_category`` writes one head of layout (a) as a plain OpenRLHF reward checkpoint (``score`` head,
``mean``/``std``
in the config) that ``get_llm_for_sequence_regression`` loads.
"""

import copy
import json
import os
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from transformers import AutoConfig, AutoModel

from openrlhf_drirl.contract import parse_categories

ROUTER_FILE = "router.json"
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def last_token_indices(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended token per row (works with left or right padding), as in OpenRLHF's RewardModel."""
    return attention_mask.size(1) - 1 - attention_mask.long().fliplr().argmax(dim=1)


class Float32Head(nn.Linear):
    """A reward head computed in float32 from the model-dtype hidden state and weight (both cast up exactly): a bf16
    head output quantises rewards to steps of 2^-7 |r| (0.0078 for |r| in [1, 2)), coarser than the reward differences
    within a GRPO group. Still a module call, so ZeRO-3 gathers its weight as before; same state dict as nn.Linear."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        return nn.functional.linear(hidden.float(), self.weight.float(), bias)


def refill_reward_buffers(model: nn.Module) -> nn.Module:
    """Re-fill the non-persistent ``mean``/``std`` buffers from the config after ``from_pretrained``.

    With transformers 5.15 these buffers hold uninitialised memory after loading (OpenRLHF PR #1343, open), so a
    normalised reward would be garbage. Works for OpenRLHF's RewardModel (scalar ``config.mean``) and for layout (a)
    (per-category ``config.drirl_mean``).
    """
    config = model.config
    mean = getattr(config, "drirl_mean", None) or getattr(config, "mean", 0.0)
    std = getattr(config, "drirl_std", None) or getattr(config, "std", 1.0)
    # float32 whatever the model dtype: the head's output is float32 (Float32Head), so is its normalisation.
    for name, value in (("mean", mean), ("std", std)):
        buffer = getattr(model, name)
        setattr(
            model, name, torch.as_tensor(value, dtype=torch.float32, device=buffer.device).expand_as(buffer).clone()
        )
    return model


def _get_multi_head_reward_model(base_pretrained_model, base_llm_model):
    class MultiHeadCategoryRewardModel(base_pretrained_model):
        """Backbone + ``score_heads = Linear(hidden, K)``; row c of the weight is category c's head.

        r(x, c) = score_heads.weight[c] . h_T(x), h_T the last attended hidden state; when ``normalize_reward`` is
        set and the model is in eval mode, r = (r - mean[c]) / std[c].
        """

        supports_gradient_checkpointing = True

        def __init__(self, config):
            super().__init__(config)
            setattr(self, self.base_model_prefix, base_llm_model(config))
            self.categories = tuple(config.drirl_categories)
            self.score_heads = Float32Head(config.hidden_size, len(self.categories), bias=False)
            self.normalize_reward = getattr(config, "normalize_reward", False)
            self.register_buffer("mean", torch.zeros(len(self.categories)), persistent=False)
            self.register_buffer("std", torch.ones(len(self.categories)), persistent=False)
            self.post_init()

        def forward(self, input_ids, attention_mask, category_ids, return_output=False):
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
            outputs = getattr(self, self.base_model_prefix)(
                input_ids, attention_mask=attention_mask, position_ids=position_ids
            )
            rows = torch.arange(input_ids.size(0), device=input_ids.device)
            # Only the last hidden state is read, so apply the K heads to (B, H), not (B, T, H).
            last_hidden = outputs["last_hidden_state"][rows, last_token_indices(attention_mask)]
            reward = self.score_heads(last_hidden)[rows, category_ids]
            if not self.training and self.normalize_reward:
                reward = (reward - self.mean[category_ids]) / self.std[category_ids]
            return (reward, outputs) if return_output else reward

    return MultiHeadCategoryRewardModel


def get_category_reward_model(
    model_name_or_path: str,
    categories: Optional[Sequence[str]] = None,
    *,
    param_dtype: str = "bf16",
    attn_implementation: str = "sdpa",
    normalize_reward: bool = False,
    init_heads: bool = False,
    ds_config: Optional[dict] = None,
    device_map=None,
):
    """Layout (a) from a causal-LM / reward checkpoint (``init_heads=True`` for a fresh head per category) or from a
    saved multi-head checkpoint (categories read from its config). Mirrors ``get_llm_for_sequence_regression``."""
    config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=True)
    saved = getattr(config, "drirl_categories", None)
    if categories is not None and saved is not None and tuple(categories) != tuple(saved):
        raise ValueError(
            f"{model_name_or_path} was trained for categories {list(saved)}, but {list(categories)} were requested: "
            "drop the category list to use the saved one, or start from the base model"
        )
    config.drirl_categories = list(saved or parse_categories(categories))
    config.normalize_reward = normalize_reward
    config._attn_implementation = attn_implementation
    if param_dtype not in TORCH_DTYPES:
        raise ValueError(f"param_dtype {param_dtype!r} is not supported: use one of {sorted(TORCH_DTYPES)}")

    base_class = AutoModel._model_mapping[type(config)]
    model_class = _get_multi_head_reward_model(base_class.__base__, base_class)
    dschf = None
    if ds_config is not None and ds_config["zero_optimization"]["stage"] == 3:
        from transformers.integrations.deepspeed import HfDeepSpeedConfig

        dschf = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must stay alive during from_pretrained)
    model = model_class.from_pretrained(
        model_name_or_path, config=config, torch_dtype=TORCH_DTYPES[param_dtype], device_map=device_map
    )
    model.config.use_cache = False
    if init_heads:
        # Same init as OpenRLHF's value head (std 1/(H+1)); ZeRO-3 needs the gathered weight.
        std = 1 / (config.hidden_size + 1)
        if dschf is not None:
            import deepspeed

            with deepspeed.zero.GatheredParameters([model.score_heads.weight], modifier_rank=0):
                if torch.distributed.get_rank() == 0:
                    model.score_heads.weight.data.normal_(mean=0.0, std=std)
        else:
            model.score_heads.weight.data.normal_(mean=0.0, std=std)
    with torch.no_grad():
        refill_reward_buffers(model)
    return model


def export_category(model, category: str, output_dir: str, tokenizer=None) -> str:
    """Write category ``category`` of layout (a) as a single-head OpenRLHF reward checkpoint.

    The checkpoint holds the backbone, ``score.weight`` = that category's head row, ``config.value_head_prefix =
    "score"`` and that category's ``mean``/``std``; ``get_llm_for_sequence_regression(output_dir, "reward")`` loads it
    (then call ``refill_reward_buffers``: OpenRLHF's loader leaves those buffers uninitialised).
    """
    from safetensors.torch import save_file

    if category not in model.categories:
        raise ValueError(f"category {category!r} is not in this model: use one of {list(model.categories)}")
    index = model.categories.index(category)
    prefix = model.base_model_prefix
    state = {
        f"{prefix}.{name}": tensor.detach().contiguous().cpu()
        for name, tensor in getattr(model, prefix).state_dict().items()
    }
    state["score.weight"] = model.score_heads.weight[index : index + 1].detach().contiguous().cpu()

    config = copy.deepcopy(model.config)
    for key in ("drirl_categories", "drirl_mean", "drirl_std"):
        if hasattr(config, key):
            delattr(config, key)
    config.value_head_prefix = "score"
    config.mean = float(model.mean[index])
    config.std = float(model.std[index])
    config.drirl_category = category
    os.makedirs(output_dir, exist_ok=True)
    config.save_pretrained(output_dir)
    save_file(state, os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir


def load_openrlhf_reward_model(path: str, param_dtype: str = "bf16", attn_implementation: str = "sdpa", **kwargs):
    """One OpenRLHF reward checkpoint through ``get_llm_for_sequence_regression``, in eval mode, buffers re-filled.

    OpenRLHF only loads bf16/fp16; ``param_dtype="fp32"`` loads bf16 and casts up (for CPU speed, not precision).
    The head's output is float32 in every dtype (``Float32Head``).
    """
    from openrlhf.models import get_llm_for_sequence_regression

    load_dtype = "bf16" if param_dtype == "fp32" else param_dtype
    model = get_llm_for_sequence_regression(
        path, "reward", param_dtype=load_dtype, attn_implementation=attn_implementation, **kwargs
    )
    if param_dtype != load_dtype:  # a blanket .to(bf16) would also round float32 buffers such as RoPE's inv_freq
        model = model.to(TORCH_DTYPES[param_dtype])
    model = model.eval()
    # OpenRLHF's RewardModel applies its nn.Linear head in the model dtype: the same head, read in float32.
    getattr(model, model.value_head_prefix).__class__ = Float32Head
    with torch.no_grad():
        refill_reward_buffers(model)
    return model


def resolve_devices(spec: Optional[str]) -> List[str]:
    """``--device``: None or ``auto`` gives every visible GPU (``cuda:0,cuda:1,...``), else ``cpu``; or a comma list
    such as ``cuda:0,cuda:1``. Each entry is checked, so a typo or a missing GPU fails before any model loads."""
    if spec in (None, "", "auto"):
        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not devices:
        raise ValueError(f"--device {spec!r} names no device: pass auto, cpu, cuda:0 or a list like cuda:0,cuda:1")
    for name in devices:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ValueError(f"--device {spec!r}: {name!r} is not a device; use cpu, cuda or cuda:N") from None
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"--device {spec!r}: {name} is not visible ({torch.cuda.device_count()} GPUs here); check "
                "CUDA_VISIBLE_DEVICES, or pass --device auto"
            )
    if len(set(devices)) != len(devices):
        raise ValueError(f"--device {spec!r} names a device twice: list each device once")
    return devices


def placement_plan(categories: Sequence[str], devices: Sequence[str]) -> Dict[str, str]:
    """Layout (b): category -> device, round-robin in category order (the K models are the same size, so each of D
    devices holds ceil(K / D) or floor(K / D) of them)."""
    if not devices:
        raise ValueError("placement needs at least one device")
    return {category: devices[i % len(devices)] for i, category in enumerate(categories)}


class PerCategoryRewardModels(nn.Module):
    """Layout (b): K OpenRLHF reward models, one per category; sample i is scored by ``models[category_i]``.

    Each category's rows go through their own model in one sub-batch, so a mixed batch costs up to K forward passes.
    The models may sit on different devices (``place``): rows go to their model's device, rewards come back.
    """

    def __init__(self, models: Dict[str, nn.Module]):
        super().__init__()
        self.categories = tuple(models)
        self.models = nn.ModuleDict(models)

    @property
    def config(self):
        return self.models[self.categories[0]].config

    @property
    def device(self):
        return next(self.parameters()).device

    def place(self, devices: Sequence[str]) -> "PerCategoryRewardModels":
        """Move each category's model to its device of ``placement_plan(categories, devices)``."""
        for category, device in placement_plan(self.categories, devices).items():
            self.models[category].to(device)
        return self

    def forward(self, input_ids, attention_mask, category_ids):
        rewards = torch.empty(input_ids.size(0), dtype=torch.float32, device=input_ids.device)
        for index in category_ids.unique().tolist():
            rows = (category_ids == index).nonzero(as_tuple=True)[0]
            mask = attention_mask[rows]
            # Drop the columns that are padding for every row of this sub-batch (left padding).
            start = int((mask.sum(0) > 0).long().argmax())
            model = self.models[self.categories[index]]
            device = next(model.parameters()).device
            reward = model(input_ids[rows, start:].to(device), mask[:, start:].to(device))
            rewards[rows] = reward.float().to(rewards.device)
        return rewards

    def save_pretrained(self, output_dir: str, tokenizer=None):
        os.makedirs(output_dir, exist_ok=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
        for category, model in self.models.items():
            model.save_pretrained(os.path.join(output_dir, category))
        with open(os.path.join(output_dir, ROUTER_FILE), "w") as f:
            json.dump({"categories": list(self.categories), "paths": {c: c for c in self.categories}}, f, indent=2)

    @classmethod
    def from_pretrained(
        cls, paths, param_dtype: str = "bf16", attn_implementation: str = "sdpa", devices=None, **kwargs
    ):
        """``paths``: a folder holding ``router.json``, or a dict ``{category: OpenRLHF reward checkpoint}``.

        ``devices``: place the models by ``placement_plan``; a GPU's models load straight onto it (seven 8B models
        are 98 GB in bf16: more than one 80 GB card, and than many hosts' free RAM).
        """
        if isinstance(paths, str):
            with open(os.path.join(paths, ROUTER_FILE)) as f:
                router = json.load(f)
            root = paths
            paths = {c: os.path.join(root, router["paths"][c]) for c in router["categories"]}
        plan = placement_plan(list(paths), devices or ["cpu"])
        models = {}
        for c, p in paths.items():
            device_map = {"": plan[c]} if plan[c].startswith("cuda") else kwargs.get("device_map")
            models[c] = load_openrlhf_reward_model(
                p, param_dtype, attn_implementation, **{**kwargs, "device_map": device_map}
            ).to(plan[c])
        return cls(models)


def load_category_reward_model(path: str, param_dtype: str = "bf16", attn_implementation: str = "sdpa", **kwargs):
    """Either layout from a saved folder: ``router.json`` means layout (b), otherwise layout (a)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"category reward model {path!r} does not exist: pass the folder train_category_rm wrote"
        )
    if os.path.exists(os.path.join(path, ROUTER_FILE)):
        return PerCategoryRewardModels.from_pretrained(path, param_dtype, attn_implementation, **kwargs)
    config = AutoConfig.from_pretrained(path)
    if not getattr(config, "drirl_categories", None):
        raise ValueError(
            f"{path} is neither a multi-head category reward model (no 'drirl_categories' in config.json) nor a "
            f"per-category folder (no {ROUTER_FILE}): train it with openrlhf_drirl.cli.train_category_rm"
        )
    return get_category_reward_model(path, param_dtype=param_dtype, attn_implementation=attn_implementation, **kwargs)

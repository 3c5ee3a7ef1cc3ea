"""``--reward.remote_url /path/to/openrlhf_drirl/reward/reward_func.py``: category rewards inside each vLLM engine.

OpenRLHF execs this file once per engine and calls ``reward_func([query], [prompt], [label])`` per sample from
worker threads. Configuration comes from environment variables (pass them to Ray workers with
``--runtime-env-json='{"env_vars": {...}}'``):

    DRIRL_RM_PATH              required: the category reward model folder (train_category_rm output or router.json)
    DRIRL_RM_DEVICE            auto (default: every visible GPU, else cpu) or a comma list; layout (b) spreads
                               its category models round-robin over them
    DRIRL_RM_DTYPE             bf16 | fp16 | fp32; default: bf16 on cuda, fp32 on cpu
    DRIRL_RM_MAX_LEN, DRIRL_RM_BATCH_SIZE, DRIRL_RM_CACHE_SIZE   ScoringConfig's max_len, batch_size, cache_size
    DRIRL_HARDNESS_BACKEND     open_clip | hf | none (default open_clip); none leaves drirl_similarity out
    DRIRL_HARDNESS_MODEL_NAME, DRIRL_HARDNESS_PRETRAINED, DRIRL_HARDNESS_CHECKPOINT, DRIRL_HARDNESS_DEVICE,
    DRIRL_HARDNESS_DTYPE, DRIRL_HARDNESS_BATCH_SIZE, DRIRL_HARDNESS_CACHE_SIZE   the --hardness.* flags
"""

import argparse
import os
import threading

_scorer = None
_lock = threading.Lock()


def build_scorer_from_env():
    from openrlhf.utils.config import hierarchize

    from openrlhf_drirl.hardness import add_hardness_arguments, build_similarity
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer, ScoringConfig

    path = os.environ.get("DRIRL_RM_PATH")
    if not path:
        raise RuntimeError(
            "DRIRL_RM_PATH is not set: export it to the category reward model folder (train_category_rm)"
        )
    hardness_argv = []
    for name in ("backend", "model_name", "pretrained", "checkpoint", "device", "dtype", "batch_size", "cache_size"):
        value = os.environ.get(f"DRIRL_HARDNESS_{name.upper()}")
        if value is not None:
            hardness_argv += [f"--hardness.{name}", value]
    hardness = hierarchize(add_hardness_arguments(argparse.ArgumentParser()).parse_args(hardness_argv)).hardness
    return CategoryRewardScorer.from_pretrained(
        path,
        similarity=build_similarity(hardness),
        param_dtype=os.environ.get("DRIRL_RM_DTYPE"),
        device=os.environ.get("DRIRL_RM_DEVICE"),
        max_len=int(os.environ.get("DRIRL_RM_MAX_LEN", ScoringConfig.max_len)),
        batch_size=int(os.environ.get("DRIRL_RM_BATCH_SIZE", ScoringConfig.batch_size)),
        cache_size=int(os.environ.get("DRIRL_RM_CACHE_SIZE", ScoringConfig.cache_size)),
    )


def reward_func(queries, prompts, labels):
    """OpenRLHF's contract: ``{"rewards", "scores", "extra_logs"}`` with (B,) float32 tensors."""
    global _scorer
    with _lock:  # the first calls arrive together from several threads: load the model once
        if _scorer is None:
            _scorer = build_scorer_from_env()
    return _scorer(queries, prompts, labels)

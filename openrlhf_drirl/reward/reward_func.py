"""``--reward.remote_url /path/to/openrlhf_drirl/reward/reward_func.py``: category rewards inside each vLLM engine.

OpenRLHF execs this file once per engine and calls ``reward_func([query], [prompt], [label])`` per sample from
worker threads; the calls take turns on the one scorer of the process. Inside a Ray actor (OpenRLHF's vLLM engines)
the model must run on cpu: on GPU every engine would load its own copy beside vLLM and the policy, never slept (8
engines, 8 copies; layout (b) cannot fit), so a GPU reward model is served once by ``serve_category_rm``
(recipes/serve_category_rm.sh) and passed as ``--reward.remote_url http://HOST:PORT/get_reward``. One-process
users (``train_ppo_local``, ``preview_grpo_s``) may use a GPU. Configuration comes from environment variables (pass
them to Ray workers with ``--runtime-env-json='{"env_vars": {...}}'``):

    DRIRL_RM_PATH              required: the category reward model folder (train_category_rm output or router.json)
    DRIRL_RM_DEVICE            auto (default: every visible GPU, else cpu) or a comma list; layout (b) spreads
                               its category models round-robin over them; cpu inside a Ray actor
    DRIRL_RM_DTYPE             bf16 | fp16 | fp32; default: bf16 on cuda, fp32 on cpu
    DRIRL_RM_MAX_LEN, DRIRL_RM_BATCH_SIZE, DRIRL_RM_CACHE_SIZE   ScoringConfig's max_len, batch_size, cache_size
    DRIRL_HARDNESS_BACKEND     open_clip | hf | none (default open_clip); none leaves drirl_similarity out
    DRIRL_HARDNESS_MODEL_NAME, DRIRL_HARDNESS_PRETRAINED, DRIRL_HARDNESS_CHECKPOINT, DRIRL_HARDNESS_DEVICE,
    DRIRL_HARDNESS_DTYPE, DRIRL_HARDNESS_BATCH_SIZE, DRIRL_HARDNESS_CACHE_SIZE   the --hardness.* flags
"""

import argparse
import os
import sys
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
    device = os.environ.get("DRIRL_RM_DEVICE")
    ray = sys.modules.get("ray")  # imported in every Ray worker; never imported here for one-process users
    in_ray_actor = ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    if in_ray_actor and device != "cpu":
        raise RuntimeError(
            f"DRIRL_RM_DEVICE={device or 'auto'}: reward_func.py runs inside each of OpenRLHF's vLLM engine actors, "
            "where a GPU reward model would be loaded once per engine beside vLLM and the policy. Serve it once with "
            "recipes/serve_category_rm.sh and pass --reward.remote_url http://HOST:PORT/get_reward, or set "
            "DRIRL_RM_DEVICE=cpu for a model small enough for CPU"
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
        device=device,
        max_len=int(os.environ.get("DRIRL_RM_MAX_LEN", ScoringConfig.max_len)),
        batch_size=int(os.environ.get("DRIRL_RM_BATCH_SIZE", ScoringConfig.batch_size)),
        cache_size=int(os.environ.get("DRIRL_RM_CACHE_SIZE", ScoringConfig.cache_size)),
    )


def reward_func(queries, prompts, labels):
    """OpenRLHF's contract: ``{"rewards", "scores", "extra_logs"}`` with (B,) float32 tensors."""
    global _scorer
    # Calls arrive together from OpenRLHF's threads (asyncio.to_thread): load the model once, and run one forward at
    # a time rather than several competing for its memory.
    with _lock:
        if _scorer is None:
            _scorer = build_scorer_from_env()
        return _scorer(queries, prompts, labels)

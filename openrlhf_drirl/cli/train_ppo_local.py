"""``python -m openrlhf_drirl.cli.train_ppo_local``: OpenRLHF PPO/GRPO training in one process, CPU or one GPU.

The same flags as ``python -m openrlhf_drirl.cli.train_ppo_ray`` (OpenRLHF's parser and checks, the registered
estimators and their flags, ``--drirl.estimator_modules``), run by OpenRLHF's own trainer code with Ray, vLLM and
DeepSpeed replaced as ``openrlhf_drirl/local/__init__.py`` describes. Defaults change only where one process needs
it: one GPU per model group, ``--ds.attn_implementation sdpa``, ``--ds.param_dtype fp32`` on CPU. Rewards come from
``--reward.remote_url`` (a reward server such as ``serve_category_rm``, or a ``reward_func`` .py file).
"""

import os
import sys

import torch

from openrlhf_drirl.advantage import import_estimator_modules
from openrlhf_drirl.cli.train_ppo_ray import add_fp32_param_dtype, openrlhf_checked_args, parse_estimator_modules

GENERATE_BATCH_FLAG = "--local.generate_batch_size"
OLD_LOG_PROBS_FLAG = "--local.old_log_probs"
ROLLOUT_LOG_FLAG = "--local.rollout_log"
EVAL_LOG_FLAG = "--local.eval_log"

# Flags whose OpenRLHF feature needs Ray, vLLM or a critic: refused here, with the reason.
UNSUPPORTED = {
    "train.async_enable": "asynchronous training needs Ray",
    "train.dynamic_batch_enable": "dynamic batching packs samples, which needs flash-attention and vLLM",
    "ds.packing_samples": "packing needs flash-attention and vLLM",
    "vllm.enable_sleep": "there is no vLLM engine to put to sleep",
    "train.colocate_all": "one process holds every model anyway",
}


def configure_parser(parser) -> None:
    for group in ("actor", "ref", "critic", "reward"):
        parser.set_defaults(**{f"{group}.num_gpus_per_node": 1})
    parser.set_defaults(**{"ds.attn_implementation": "sdpa"})
    dtype = add_fp32_param_dtype(parser)
    if not torch.cuda.is_available():
        dtype.default = "fp32"
    parser.add_argument(
        GENERATE_BATCH_FLAG, type=int, default=32, help="rollout sequences the Hugging Face backend generates at once"
    )
    parser.add_argument(
        OLD_LOG_PROBS_FLAG,
        choices=["auto", "forward"],
        default="auto",
        help="auto: skip the policy forward for the old log-probs where it is redundant (one epoch, one optimizer "
        "step per rollout, KL as a loss; openrlhf_drirl.local.trainer.old_log_probs_forward_needed) and use the "
        "detached current ones; forward: always compute them, as OpenRLHF does",
    )
    parser.add_argument(
        ROLLOUT_LOG_FLAG,
        default=None,
        help="JSONL of every rollout sample (step, prompt, response, label, reward, drirl/* scales; "
        "openrlhf_drirl/local/rollout_log.py); default <--ckpt.output_dir>/rollout_samples.jsonl; '' for none",
    )
    parser.add_argument(
        EVAL_LOG_FLAG,
        default=None,
        help="with --eval.dataset: JSONL of every evaluation sample, the rollout log's rows, at step 0 and every "
        "--eval.steps (training_report --eval_run judges them); default <--ckpt.output_dir>/eval_samples.jsonl; '' "
        "for none",
    )


def check_one_process(args) -> None:
    for flag, reason in UNSUPPORTED.items():
        section, name = flag.split(".")
        if getattr(getattr(args, section), name):
            raise ValueError(f"--{flag}: {reason}; drop it for train_ppo_local, or use train_ppo_ray")
    for group in ("actor", "ref"):
        nodes, gpus = getattr(args, group).num_nodes, getattr(args, group).num_gpus_per_node
        if nodes * gpus != 1:
            raise ValueError(
                f"--{group}.num_nodes {nodes} x --{group}.num_gpus_per_node {gpus}: train_ppo_local is one process; "
                "set both to 1, or use train_ppo_ray"
            )
    if args.critic.model_name_or_path:
        raise ValueError(
            f"--algo.advantage.estimator {args.algo.advantage.estimator} needs a critic, which train_ppo_local does "
            "not run: use a group estimator (group_norm, grpo_s, rloo, ...)"
        )
    if not args.reward.remote_url or args.train.agent_func_path:
        raise ValueError(
            "train_ppo_local takes rewards from --reward.remote_url (a reward server URL or a reward_func .py file)"
        )
    if args.algo.advantage.is_correction_level != "off":
        raise ValueError(
            "--algo.advantage.is_correction_level needs vLLM's rollout log-probabilities: set it to off for "
            "train_ppo_local"
        )


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        modules = import_estimator_modules(parse_estimator_modules(argv))
        args = openrlhf_checked_args(argv, modules, configure_parser)
        check_one_process(args)
    except (ImportError, AssertionError, ValueError) as e:
        print(f"train_ppo_local: error: {e}", file=sys.stderr)
        sys.exit(2)
    from openrlhf_drirl.local.trainer import train

    try:
        rollout_log = args.local.rollout_log
        if rollout_log is None:
            rollout_log = os.path.join(args.ckpt.output_dir, "rollout_samples.jsonl")
        eval_log = args.local.eval_log
        if eval_log is None:
            eval_log = os.path.join(args.ckpt.output_dir, "eval_samples.jsonl")
        output_dir = train(args, args.local.generate_batch_size, args.local.old_log_probs, rollout_log, eval_log)
    except (ValueError, RuntimeError) as e:
        print(f"train_ppo_local: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"train_ppo_local: saved the policy to {output_dir}")


if __name__ == "__main__":
    main()

"""Train a category reward model by inverse RL on irl_pairs.jsonl (demonstration = chosen, policy sample = rejected).

OpenRLHF's DeepspeedStrategy (ZeRO) on GPU: ``deepspeed --module openrlhf_drirl.cli.train_category_rm ...``. The same
on CPU ranks (no GPU, or ``--train.cpu``; gloo, fp32): ``python -m openrlhf_drirl.cli.train_category_rm ...`` (one
rank) or ``torchrun --nproc_per_node N -m openrlhf_drirl.cli.train_category_rm ...``.
Flags mirror ``openrlhf.cli.train_rm``; the DR-IRL ones are ``--data.category_key``, ``--data.strict``, ``--irl.*``
and ``--eval.split_ratio``.

The pair files are checked before the model loads. A defect (a broken JSON line, an empty file, a missing column, a
non-string or empty text, an unknown category) exits with status 2 and one line naming the file, the line or row and
the field. What only trains weakly is a warning: pairs with chosen == rejected (dropped), categories with no training
pairs, or with fewer pairs than their slots per step; ``--data.strict`` makes these errors too.
"""

import argparse
import sys
from datetime import datetime

from openrlhf.utils.config import hierarchize


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Checkpoint
    parser.add_argument("--ckpt.output_dir", "--ckpt.save_path", dest="ckpt.output_dir", type=str, default="./ckpt")
    parser.add_argument("--ckpt.save_steps", type=int, default=-1)
    parser.add_argument("--ckpt.path", type=str, default="./ckpt/checkpoints_category_rm")
    parser.add_argument("--ckpt.max_num", type=int, default=3)
    parser.add_argument("--ckpt.max_mem", type=int, default=int(1e8))
    parser.add_argument("--ckpt.load_enable", action="store_true", default=False, help="Resume from --ckpt.path")
    parser.add_argument("--logger.logging_steps", type=int, default=1)
    parser.add_argument("--eval.steps", type=int, default=-1, help="Held-out evaluation period (-1: once per epoch)")

    # DeepSpeed
    parser.add_argument("--local_rank", type=int, default=-1, help="local_rank for deepspeed")
    parser.add_argument("--ds.zero_stage", type=int, default=2, help="DeepSpeed ZeRO stage")
    parser.add_argument(
        "--ds.param_dtype", type=str, default=None, choices=["bf16", "fp16", "fp32"], help="Default: bf16, fp32 on CPU"
    )
    parser.add_argument("--ds.zpg", type=int, default=1, help="ZeRO++ max partition size")
    parser.add_argument("--ds.adam_offload", action="store_true", default=False)
    parser.add_argument(
        "--ds.attn_implementation", type=str, default=None, help="Default: flash_attention_2, sdpa on CPU"
    )
    parser.add_argument("--ds.grad_accum_dtype", type=str, default=None)
    parser.add_argument("--ds.overlap_comm", action="store_true", default=False)
    parser.add_argument("--ds.deepcompile", action="store_true", default=False)
    parser.add_argument("--ds.tensor_parallel_size", type=int, default=1)
    parser.add_argument("--ds.ring_attn_size", type=int, default=1)
    parser.add_argument("--ds.packing_samples", action="store_true", default=False)
    parser.add_argument("--model.gradient_checkpointing_enable", action="store_true", default=False)
    parser.add_argument("--model.gradient_checkpointing_reentrant", action="store_true", default=False)

    # Model
    parser.add_argument("--model.model_name_or_path", type=str, required=True, help="Backbone (causal LM or RM)")

    # Training
    parser.add_argument("--train.seed", type=int, default=42)
    parser.add_argument("--train.full_determinism_enable", action="store_true", default=False)
    parser.add_argument("--train.max_epochs", type=float, default=1)
    parser.add_argument("--train.micro_batch_size", type=int, default=1)
    parser.add_argument("--train.batch_size", type=int, default=128, help="Global batch size (pairs per step)")
    parser.add_argument("--train.cpu", action="store_true", default=False, help="CPU ranks even with a GPU")
    parser.add_argument("--adam.lr", type=float, default=9e-6)
    parser.add_argument("--adam.betas", type=float, nargs=2, default=(0.9, 0.95))
    parser.add_argument("--adam.eps", type=float, default=1e-8)
    parser.add_argument("--adam.weight_decay", type=float, default=0.0)
    parser.add_argument("--lr_scheduler", type=str, default="cosine_with_min_lr")
    parser.add_argument("--lr_warmup_ratio", type=float, default=0.03)
    parser.add_argument("--min_lr_ratio", type=float, default=0.1)
    parser.add_argument("--max_norm", type=float, default=1.0, help="Gradient clipping")

    # Data
    parser.add_argument("--data.dataset", type=str, required=True, help="irl_pairs.jsonl (comma list allowed)")
    parser.add_argument("--data.dataset_probs", type=str, default=None)
    parser.add_argument("--data.dataset_split", type=str, default="train")
    parser.add_argument("--data.prompt_key", type=str, default="prompt")
    parser.add_argument("--data.chosen_key", type=str, default="chosen", help="Demonstration column")
    parser.add_argument("--data.rejected_key", type=str, default="rejected", help="Policy-sample column")
    parser.add_argument("--data.category_key", type=str, default="category")
    parser.add_argument("--data.apply_chat_template", action="store_true", default=False)
    parser.add_argument("--data.max_len", type=int, default=512)
    parser.add_argument(
        "--data.response_tokens",
        type=int,
        default=0,
        help="Score only each response's first N tokens, in training and (saved in the model's config) in serving; "
        "0: the whole response. Set it to the rollout length or less when the demonstrations are shorter than the "
        "policy's samples, so that length alone cannot tell them apart",
    )
    parser.add_argument(
        "--data.strict",
        action="store_true",
        default=False,
        help="Make the data warnings errors: pairs with chosen == rejected (otherwise dropped), categories with no "
        "training pairs (their head is never trained) or with fewer pairs than their slots per step (repeated)",
    )
    parser.add_argument("--eval.dataset", type=str, default=None, help="Held-out pairs (default: split the dataset)")
    parser.add_argument("--eval.split", type=str, default="train")
    parser.add_argument("--eval.split_ratio", type=float, default=0.1, help="Held-out share of each category")

    # IRL
    parser.add_argument("--irl.categories", type=str, default=None, help="Comma list (default: the 7 categories)")
    parser.add_argument("--irl.refresh_rounds", type=int, default=0, help="Extra rounds on fresh policy samples")
    parser.add_argument("--irl.policy_path", type=str, default=None, help="Policy drawing the refresh samples")
    parser.add_argument("--irl.max_new_tokens", type=int, default=256)
    parser.add_argument("--irl.temperature", type=float, default=1.0)

    # wandb / TensorBoard (as train_rm)
    parser.add_argument("--logger.wandb.key", type=str, default=None)
    parser.add_argument("--logger.wandb.org", type=str, default=None)
    parser.add_argument("--logger.wandb.group", type=str, default=None)
    parser.add_argument("--logger.wandb.project", type=str, default="openrlhf_train_rm")
    parser.add_argument("--logger.wandb.run_name", type=str, default="rm_%s" % datetime.now().strftime("%m%dT%H:%M"))
    parser.add_argument("--logger.tensorboard_dir", type=str, default=None, help="TensorBoard logging path")
    return parser


def main(argv=None):
    args = hierarchize(build_parser().parse_args(argv))
    from openrlhf_drirl.reward.irl_trainer import train

    try:
        train(args)
    except (ValueError, FileNotFoundError) as e:
        # Bad input (PairDataError, LabelError and the flag checks are ValueErrors): one line naming the fix, no trace.
        print(f"train_category_rm: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

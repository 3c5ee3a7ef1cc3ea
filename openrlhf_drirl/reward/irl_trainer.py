"""Category reward models by inverse RL (DR-IRL section 3, the ML-IRL reward step).

For category c with demonstrations y and policy samples y~ of prompt x, head c minimises

    L_c = -E log sigmoid( r_c(x, y) - r_c(x, y~) )            (OpenRLHF's PairWiseLoss)

on category-balanced batches (every category has batch_size / K pairs per step), so each head sees the same number of
pairs whatever the category sizes. With ``--irl.refresh_rounds N`` the reward is then trained N more rounds, each on
fresh rejected samples drawn from the policy (the ML-IRL outer loop; point ``--irl.policy_path`` at the current actor),
drawn on rank 0 alone and broadcast to the other ranks.

One loop, driven only through OpenRLHF's strategy interface: ``get_training_strategy`` gives OpenRLHF's
DeepspeedStrategy (ZeRO), on GPU ranks or on CPU ranks. Logs go to OpenRLHF's wandb/tensorboard
loggers (``--logger.*``); the held-out loss and pairwise accuracy per category are evaluated every ``--eval.steps``
and at the end.
"""

import hashlib
import json
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from openrlhf_drirl.contract import parse_categories
from openrlhf_drirl.reward.data import (
    PairDataError,
    balanced_batches,
    category_warnings,
    collate_pairs,
    load_pair_rows,
    split_held_out,
    tokenize_pairs,
)
from openrlhf_drirl.reward.model import get_category_reward_model
from openrlhf_drirl.training import get_training_strategy

ACCURACY_JSON = "eval_accuracy.json"
ACCURACY_PNG = "eval_accuracy.png"


@torch.no_grad()
def evaluate(model, pairs, categories: Sequence[str], pad_token_id: int, micro_batch_size: int) -> dict:
    """Held-out pairwise accuracy per category: the share of pairs with r_c(x, demonstration) > r_c(x, sample)
    (the paper's Table 8), and the PairWiseLoss; also the per-category mean/std of all rewards, stored in the config
    for normalisation."""
    from openrlhf.models import PairWiseLoss

    loss_fn = PairWiseLoss()
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), micro_batch_size):
        batch = pairs[start : start + micro_batch_size]
        input_ids, attention_mask, category_ids = collate_pairs(batch, pad_token_id)
        rewards = model(input_ids.to(device), attention_mask.to(device), category_ids.to(device)).float().cpu()
        chosen.append(rewards[: len(batch)])
        rejected.append(rewards[len(batch) :])
    model.train(was_training)
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    category_ids = torch.tensor([p[2] for p in pairs])
    report = {"per_category": {}, "mean": [], "std": []}
    for index, category in enumerate(categories):
        rows = category_ids == index
        both = torch.cat([chosen[rows], rejected[rows]])
        report["mean"].append(float(both.mean()) if rows.any() else 0.0)
        report["std"].append(float(both.std()) if rows.sum() > 1 else 1.0)
        if rows.any():
            report["per_category"][category] = {
                "accuracy": float((chosen[rows] > rejected[rows]).float().mean()),
                "loss": float(loss_fn(chosen[rows], rejected[rows])),
                "pairs": int(rows.sum()),
            }
    report["accuracy"] = float((chosen > rejected).float().mean())
    report["loss"] = float(loss_fn(chosen, rejected))
    report["pairs"] = len(pairs)
    return report


def save_accuracy_report(report: dict, output_dir: str):
    """``eval_accuracy.json`` and a bar chart ``eval_accuracy.png`` (one bar per category)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, ACCURACY_JSON), "w") as f:
        json.dump({k: v for k, v in report.items() if k not in ("mean", "std")}, f, indent=2)
    names = list(report["per_category"])
    values = [report["per_category"][n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_title(f"Category reward model (overall {report['accuracy']:.3f}, {report['pairs']} pairs)")
    for i, v in enumerate(values):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, ACCURACY_PNG), dpi=100)
    plt.close(fig)


def refresh_seeds(seed: int, round_index: int, num_rows: int) -> List[int]:
    """One sampling seed per row from ``--train.seed``, the round and the row: a resumed run redraws the same samples,
    and each round draws new ones."""
    digests = (hashlib.sha256(f"{seed}:irl_round{round_index}:{row}".encode()).digest() for row in range(num_rows))
    return [int.from_bytes(d[:4], "big") & 0x7FFFFFFF for d in digests]


def refreshed_rows(rows: List[dict], round_index: int, generate: Optional[Callable], args) -> List[dict]:
    """The rows with ``rejected`` replaced by fresh policy samples. Saved per round, so a resumed run reuses them.

    Under torch.distributed, rank 0 alone draws them (or reads the saved round) and writes the file; the other ranks
    (``generate`` may be None there) receive its rows by broadcast, so every rank trains on the same texts."""
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    new_rows = None
    if not distributed or torch.distributed.get_rank() == 0:
        path = os.path.join(args.ckpt.output_dir, f"irl_round{round_index}_pairs.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                new_rows = [json.loads(line) for line in f]
        else:
            outputs = generate(
                [r["prompt"] for r in rows],
                max_new_tokens=args.irl.max_new_tokens,
                temperature=args.irl.temperature,
                seeds=refresh_seeds(args.train.seed, round_index, len(rows)),
            )
            new_rows = [{**r, "rejected": output.text} for r, output in zip(rows, outputs)]
            os.makedirs(args.ckpt.output_dir, exist_ok=True)
            with open(f"{path}.tmp", "w") as f:  # renamed into place: a kill never leaves a partial round
                for row in new_rows:
                    f.write(json.dumps(row) + "\n")
            os.replace(f"{path}.tmp", path)
    if distributed:
        box = [new_rows]
        torch.distributed.broadcast_object_list(box, src=0)
        new_rows = box[0]
    return new_rows


def train(args, generate: Optional[Callable] = None) -> Dict:
    """Train, evaluate, save. ``args`` is the hierarchized namespace of ``cli.train_category_rm``. ``generate`` draws
    the refresh rounds' samples with the generation layer's signature, ``generate(prompts, *, max_new_tokens,
    temperature, seeds) -> [Generation]``; it defaults to ``HFGenerator(--irl.policy_path).generate`` (a
    ``VLLMGenerator(...).generate`` fits as well). Returns the held-out accuracy report."""
    from openrlhf.models import PairWiseLoss
    from openrlhf.utils import get_tokenizer
    from openrlhf.utils.logging_utils import TensorboardLogger, WandbLogger

    categories = parse_categories(args.irl.categories)
    strategy = get_training_strategy(args)
    strategy.setup_distributed()

    # The data is checked before the model loads, so a bad file fails in seconds.
    split, probs = args.data.dataset_split, args.data.dataset_probs
    rows, warnings = load_pair_rows(args.data.dataset, args.data, categories, split, probs, args.train.seed)
    if args.eval.dataset:
        train_rows = rows
        eval_rows, eval_warnings = load_pair_rows(args.eval.dataset, args.data, categories, args.eval.split)
        warnings += eval_warnings
    else:
        train_rows, eval_rows = split_held_out(rows, args.eval.split_ratio, args.train.seed)
    warnings += category_warnings(train_rows, categories, args.train.batch_size)
    if warnings and args.data.strict:
        raise PairDataError("--data.strict: " + ". ".join(warnings))
    if strategy.is_rank_0():
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if not eval_rows:
        raise ValueError("no held-out pairs: set --eval.split_ratio above 0 (e.g. 0.1) or pass --eval.dataset")
    if args.train.batch_size % args.train.micro_batch_size:
        raise ValueError(
            f"--train.batch_size {args.train.batch_size} is not a multiple of --train.micro_batch_size "
            f"{args.train.micro_batch_size}: make it one"
        )
    micro_per_step = args.train.batch_size // args.train.micro_batch_size
    if micro_per_step % strategy.world_size:
        raise ValueError(
            f"--train.batch_size / --train.micro_batch_size is {micro_per_step}, not a multiple of the "
            f"{strategy.world_size} ranks: change either flag"
        )
    if args.data.response_tokens < 0:
        raise ValueError(
            f"--data.response_tokens {args.data.response_tokens}: pass 0 (score whole responses) or a positive count"
        )
    if args.irl.refresh_rounds > 0 and generate is None:
        if not args.irl.policy_path:
            raise ValueError(
                "--irl.refresh_rounds needs --irl.policy_path (the policy that draws new rejected samples)"
            )
        if strategy.is_rank_0():  # the only rank that draws (refreshed_rows)
            from openrlhf_drirl.generation.hf import HFGenerator

            generate = HFGenerator(args.irl.policy_path, chat=args.data.apply_chat_template).generate

    model = get_category_reward_model(
        args.model.model_name_or_path,
        categories,
        param_dtype=strategy.param_dtype,
        attn_implementation=args.ds.attn_implementation,
        init_heads=True,
        ds_config=strategy.get_ds_train_config(),
    )
    if model.categories != tuple(categories):
        raise ValueError(f"--irl.categories {list(categories)} differ from the checkpoint's {list(model.categories)}")
    tokenizer = get_tokenizer(args.model.model_name_or_path, model, "left", strategy)
    if args.model.gradient_checkpointing_enable:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": args.model.gradient_checkpointing_reentrant}
        )

    steps_per_epoch = max(1, math.ceil(len(train_rows) / args.train.batch_size))
    steps_per_round = max(1, math.ceil(args.train.max_epochs * len(train_rows) / args.train.batch_size))
    max_steps = steps_per_round * (1 + args.irl.refresh_rounds)
    eval_steps = args.eval.steps if args.eval.steps > 0 else steps_per_epoch  # -1: once per epoch, as train_rm
    cfg = dict(
        optim="adam",
        muon={},
        adam=vars(args.adam),
        lr_scheduler=args.lr_scheduler,
        lr_warmup_ratio=args.lr_warmup_ratio,
        min_lr_ratio=args.min_lr_ratio,
        max_norm=args.max_norm,
        scheduler_steps=max_steps,
    )
    model, optimizer, scheduler = strategy.prepare((model, cfg))

    step = 0
    if args.ckpt.load_enable and os.path.exists(args.ckpt.path):
        load_path, states = strategy.load_ckpt(model, args.ckpt.path)
        if load_path is not None:
            step = states["global_step"]
            strategy.print(f"Resumed from {load_path} at step {step}/{max_steps}")

    loggers = []
    if strategy.is_rank_0():
        loggers += [WandbLogger(args)] if args.logger.wandb.key else []
        loggers += [TensorboardLogger(args)] if args.logger.tensorboard_dir else []
    eval_pairs = tokenize_pairs(
        eval_rows, tokenizer, categories, args.data.max_len, args.data.apply_chat_template, args.data.response_tokens
    )

    def evaluate_and_log(global_step: int) -> dict:
        report = evaluate(model, eval_pairs, categories, tokenizer.pad_token_id, args.train.micro_batch_size)
        logs = {"loss": report["loss"], "acc": report["accuracy"]}
        for category, result in report["per_category"].items():
            logs[f"loss/{category}"], logs[f"acc/{category}"] = result["loss"], result["accuracy"]
        for logger in loggers:
            logger.log_eval(global_step, logs)
        return report

    loss_fn = PairWiseLoss()
    device = next(model.parameters()).device
    rank, world = strategy.get_rank(), strategy.world_size
    model.train()
    progress = tqdm(total=max_steps, initial=step, desc="IRL reward", disable=not strategy.is_rank_0())
    while step < max_steps:
        round_index = step // steps_per_round
        round_rows = train_rows if round_index == 0 else refreshed_rows(train_rows, round_index, generate, args)
        pairs = tokenize_pairs(
            round_rows,
            tokenizer,
            categories,
            args.data.max_len,
            args.data.apply_chat_template,
            args.data.response_tokens,
        )
        schedule = balanced_batches(
            [p[2] for p in pairs], args.train.batch_size, steps_per_round, args.train.seed + round_index
        )
        for batch in schedule[step - round_index * steps_per_round :]:
            # This rank's share of the step's micro-batches (DeepSpeed averages the gradients over ranks).
            micro = args.train.micro_batch_size
            micro_batches = [batch[i : i + micro] for i in range(0, len(batch), micro)][rank::world]
            sums = {"loss": 0.0, "acc": 0.0, "chosen_reward": 0.0, "reject_reward": 0.0}
            for indices in micro_batches:
                input_ids, attention_mask, category_ids = collate_pairs(
                    [pairs[i] for i in indices], tokenizer.pad_token_id
                )
                rewards = model(input_ids.to(device), attention_mask.to(device), category_ids.to(device))
                chosen, rejected = rewards[: len(indices)].float(), rewards[len(indices) :].float()
                loss = loss_fn(chosen, rejected)
                # The strategy scales by 1 / accumulation steps and steps the optimizer on the step's last micro-batch.
                strategy.backward(loss, model, optimizer)
                strategy.optimizer_step(optimizer, model, scheduler)
                sums["loss"] += loss.item()
                sums["acc"] += (chosen > rejected).float().mean().item()
                sums["chosen_reward"] += chosen.mean().item()
                sums["reject_reward"] += rejected.mean().item()
            step += 1
            logs = strategy.all_reduce({k: v / len(micro_batches) for k, v in sums.items()})
            logs.update(lr=scheduler.get_last_lr()[0], grad_norm=strategy.get_grad_norm(model), round=round_index)
            progress.update(1)
            progress.set_postfix(loss=f"{logs['loss']:.4f}", round=round_index)
            if step % args.logger.logging_steps == 0:
                for logger in loggers:
                    logger.log_train(step, logs)
            if step % eval_steps == 0 and step < max_steps:
                result = evaluate_and_log(step)
                strategy.print(f"step {step}: held-out loss {result['loss']:.4f}, accuracy {result['accuracy']:.3f}")
            if args.ckpt.save_steps > 0 and step % args.ckpt.save_steps == 0 and step < max_steps:
                strategy.save_ckpt(
                    model,
                    args.ckpt.path,
                    f"global_step{step}",
                    args.ckpt.max_num,
                    args.ckpt.max_mem,
                    {"global_step": step},
                )
    progress.close()

    report = evaluate_and_log(max_steps)
    for logger in loggers:
        logger.close()
    unwrapped = strategy._unwrap_model(model)
    unwrapped.config.drirl_mean, unwrapped.config.drirl_std = report["mean"], report["std"]
    unwrapped.config.drirl_response_tokens = args.data.response_tokens  # the scorer cuts responses as training did
    if strategy.is_rank_0():
        for category, result in report["per_category"].items():
            print(f"held-out pairwise accuracy  {category:<32} {result['accuracy']:.3f}  ({result['pairs']} pairs)")
        print(f"held-out pairwise accuracy  {'overall':<32} {report['accuracy']:.3f}  ({report['pairs']} pairs)")
        save_accuracy_report(report, args.ckpt.output_dir)
    strategy.save_model(model, tokenizer, args.ckpt.output_dir)
    return report

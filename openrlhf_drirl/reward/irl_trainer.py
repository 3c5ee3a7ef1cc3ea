"""Category reward models by inverse RL (DR-IRL section 3, the ML-IRL reward step).

For category c with demonstrations y and policy samples y~ of prompt x, head c minimises

    L_c = -E log sigmoid( r_c(x, y) - r_c(x, y~) )            (OpenRLHF's PairWiseLoss)

on category-balanced batches (every category has batch_size / K pairs per step), so each head sees the same number of
pairs whatever the category sizes. With ``--irl.refresh_rounds N`` the reward is then trained N more rounds, each on
fresh rejected samples drawn from the policy (the ML-IRL outer loop; point ``--irl.policy_path`` at the current actor).

Two engines run the same loop: plain torch on CPU (tests, smoke runs) and OpenRLHF's DeepspeedStrategy (ZeRO) on GPU,
chosen by ``torch.cuda.is_available()``. Only ``backward``/``step``/checkpoint/save differ; they are marked "GPU".
"""

import glob
import json
import math
import os
import random
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from openrlhf_drirl.contract import parse_categories
from openrlhf_drirl.reward.data import (
    balanced_batches,
    chat_prompt_and_response,
    collate_pairs,
    load_pair_rows,
    split_held_out,
    tokenize_pairs,
)
from openrlhf_drirl.reward.model import get_category_reward_model

ACCURACY_JSON = "eval_accuracy.json"
ACCURACY_PNG = "eval_accuracy.png"


def make_hf_generator(policy_path: str, max_new_tokens: int, temperature: float, apply_chat_template: bool, seed: int):
    """``generate(prompts) -> responses`` with transformers ``generate`` (CPU or one GPU). Any callable with this
    signature (for example one wrapping a vLLM engine) can replace it in ``train``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = AutoModelForCausalLM.from_pretrained(policy_path).to(device).eval()

    @torch.no_grad()
    def generate(prompts: List[str], batch_size: int = 16) -> List[str]:
        torch.manual_seed(seed)
        responses = []
        for start in range(0, len(prompts), batch_size):
            texts = [
                chat_prompt_and_response(tokenizer, p, "")[0] if apply_chat_template else p
                for p in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = policy.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                pad_token_id=tokenizer.pad_token_id,
            )
            responses += tokenizer.batch_decode(out[:, batch["input_ids"].size(1) :], skip_special_tokens=True)
        return responses

    return generate


@torch.no_grad()
def evaluate(model, pairs, categories: Sequence[str], pad_token_id: int, micro_batch_size: int) -> dict:
    """Held-out pairwise accuracy per category: the share of pairs with r_c(x, demonstration) > r_c(x, sample)
    (the paper's Table 8); also the per-category mean/std of all rewards, stored in the config for normalisation."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(pairs), micro_batch_size):
        batch = pairs[start : start + micro_batch_size]
        input_ids, attention_mask, category_ids = collate_pairs(batch, pad_token_id)
        device = next(model.parameters()).device
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
                "pairs": int(rows.sum()),
            }
    report["accuracy"] = float((chosen > rejected).float().mean())
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


def _latest_cpu_checkpoint(ckpt_dir: str) -> Optional[str]:
    paths = glob.glob(os.path.join(ckpt_dir, "global_step*.pt"))
    return max(paths, key=lambda p: int(p.rsplit("global_step", 1)[1][:-3])) if paths else None


def _save_cpu_checkpoint(ckpt_dir: str, step: int, model, optimizer, scheduler, max_num: int):
    """Write then rename, so a kill during the save leaves the previous checkpoint intact."""
    os.makedirs(ckpt_dir, exist_ok=True)
    path = os.path.join(ckpt_dir, f"global_step{step}.pt")
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    state["scheduler"] = scheduler.state_dict()
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    old = sorted(glob.glob(os.path.join(ckpt_dir, "global_step*.pt")), key=lambda p: int(p.rsplit("step", 1)[1][:-3]))
    for stale in old[:-max_num]:
        os.remove(stale)


def refreshed_rows(rows: List[dict], round_index: int, generate: Callable, output_dir: str) -> List[dict]:
    """The rows with ``rejected`` replaced by fresh policy samples. Saved per round, so a resumed run reuses them."""
    path = os.path.join(output_dir, f"irl_round{round_index}_pairs.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            return [json.loads(line) for line in f]
    responses = generate([r["prompt"] for r in rows])
    new_rows = [{**r, "rejected": response} for r, response in zip(rows, responses)]
    os.makedirs(output_dir, exist_ok=True)
    tmp_path = f"{path}.tmp{os.getpid()}"  # every GPU rank draws the same samples; each writes its own temp file
    with open(tmp_path, "w") as f:
        for row in new_rows:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp_path, path)
    return new_rows


def train(args, generate: Optional[Callable] = None) -> Dict:
    """Train, evaluate, save. ``args`` is the hierarchized namespace of ``cli.train_category_rm``; ``generate`` (for
    refresh rounds) defaults to ``make_hf_generator(--irl.policy_path)``. Returns the held-out accuracy report."""
    from openrlhf.models import PairWiseLoss
    from openrlhf.utils import get_tokenizer
    from transformers.optimization import get_scheduler

    categories = parse_categories(args.irl.categories)
    on_gpu = torch.cuda.is_available() and not args.train.cpu
    strategy = None
    if on_gpu:  # GPU: OpenRLHF's DeepSpeed strategy, same flags as train_rm
        from openrlhf.utils import get_strategy

        strategy = get_strategy(args)
        strategy.setup_distributed()
    random.seed(args.train.seed)
    torch.manual_seed(args.train.seed)

    rows = load_pair_rows(args.data.dataset, args.data, categories, args.train.seed, args.data.dataset_split)
    if args.eval.dataset:
        train_rows = rows
        eval_rows = load_pair_rows(args.eval.dataset, args.data, categories, args.train.seed, args.eval.split)
    else:
        train_rows, eval_rows = split_held_out(rows, args.eval.split_ratio, args.train.seed)
    if not eval_rows:
        raise ValueError("no held-out pairs: set --eval.split_ratio above 0 (e.g. 0.1) or pass --eval.dataset")
    if args.train.batch_size % args.train.micro_batch_size:
        raise ValueError(
            f"--train.batch_size {args.train.batch_size} is not a multiple of --train.micro_batch_size "
            f"{args.train.micro_batch_size}: make it one"
        )
    if args.irl.refresh_rounds > 0 and generate is None:
        if not args.irl.policy_path:
            raise ValueError(
                "--irl.refresh_rounds needs --irl.policy_path (the policy that draws new rejected samples)"
            )
        generate = make_hf_generator(
            args.irl.policy_path,
            args.irl.max_new_tokens,
            args.irl.temperature,
            args.data.apply_chat_template,
            args.train.seed,
        )

    model = get_category_reward_model(
        args.model.model_name_or_path,
        categories,
        param_dtype=args.ds.param_dtype if on_gpu else "fp32",
        attn_implementation=args.ds.attn_implementation if on_gpu else "sdpa",
        init_heads=True,
        ds_config=strategy.get_ds_train_config() if on_gpu else None,
    )
    if model.categories != tuple(categories):
        raise ValueError(f"--irl.categories {list(categories)} differ from the checkpoint's {list(model.categories)}")
    tokenizer = get_tokenizer(args.model.model_name_or_path, model, "left", strategy)
    if args.model.gradient_checkpointing_enable:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": args.model.gradient_checkpointing_reentrant}
        )

    steps_per_round = max(1, math.ceil(args.train.max_epochs * len(train_rows) / args.train.batch_size))
    rounds = 1 + args.irl.refresh_rounds
    max_steps = steps_per_round * rounds
    if on_gpu:  # GPU
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
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=args.adam.lr,
            betas=tuple(args.adam.betas),
            eps=args.adam.eps,
            weight_decay=args.adam.weight_decay,
        )
        scheduler = get_scheduler(
            args.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(max_steps * args.lr_warmup_ratio),
            num_training_steps=max_steps,
            scheduler_specific_kwargs={"min_lr": args.adam.lr * args.min_lr_ratio},
        )

    step = 0
    if args.ckpt.load_enable:
        if on_gpu and os.path.exists(args.ckpt.path):  # GPU
            load_path, states = strategy.load_ckpt(model, args.ckpt.path)
            step = states.get("global_step", 0) if load_path is not None else 0
        elif not on_gpu and _latest_cpu_checkpoint(args.ckpt.path):
            state = torch.load(_latest_cpu_checkpoint(args.ckpt.path), weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step = state["step"]
        if step:
            print(f"Resumed from {args.ckpt.path} at step {step}/{max_steps}")

    rank = strategy.get_rank() if on_gpu else 0
    world = torch.distributed.get_world_size() if on_gpu else 1
    micro_per_step = args.train.batch_size // args.train.micro_batch_size
    if micro_per_step % world:
        raise ValueError(f"--train.batch_size / --train.micro_batch_size must be a multiple of the {world} ranks")
    device = torch.cuda.current_device() if on_gpu else "cpu"
    loss_fn = PairWiseLoss()
    eval_pairs = tokenize_pairs(eval_rows, tokenizer, categories, args.data.max_len, args.data.apply_chat_template)
    model.train()
    progress = tqdm(total=max_steps, initial=step, desc="IRL reward", disable=rank != 0)
    while step < max_steps:
        round_index = step // steps_per_round
        round_rows = (
            train_rows if round_index == 0 else refreshed_rows(train_rows, round_index, generate, args.ckpt.output_dir)
        )
        pairs = tokenize_pairs(round_rows, tokenizer, categories, args.data.max_len, args.data.apply_chat_template)
        schedule = balanced_batches(
            [p[2] for p in pairs], args.train.batch_size, steps_per_round, args.train.seed + round_index
        )
        for batch in schedule[step - round_index * steps_per_round :]:
            micro_batches = [
                batch[i : i + args.train.micro_batch_size] for i in range(0, len(batch), args.train.micro_batch_size)
            ]
            step_loss = 0.0
            for micro in micro_batches[rank::world]:
                input_ids, attention_mask, category_ids = collate_pairs(
                    [pairs[i] for i in micro], tokenizer.pad_token_id
                )
                rewards = model(input_ids.to(device), attention_mask.to(device), category_ids.to(device))
                chosen, rejected = rewards[: len(micro)].float(), rewards[len(micro) :].float()
                loss = loss_fn(chosen, rejected) / (1 if on_gpu else len(micro_batches))
                if on_gpu:  # GPU: the engine scales by its gradient accumulation steps
                    strategy.backward(loss, model, optimizer)
                else:
                    loss.backward()
                step_loss += loss.item()
            if on_gpu:  # GPU
                strategy.optimizer_step(optimizer, model, scheduler)
            else:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{step_loss:.4f}", round=round_index)
            if args.ckpt.save_steps > 0 and step % args.ckpt.save_steps == 0 and step < max_steps:
                if on_gpu:  # GPU
                    strategy.save_ckpt(
                        model,
                        args.ckpt.path,
                        f"global_step{step}",
                        args.ckpt.max_num,
                        args.ckpt.max_mem,
                        {"global_step": step},
                    )
                else:
                    _save_cpu_checkpoint(args.ckpt.path, step, model, optimizer, scheduler, args.ckpt.max_num)
    progress.close()

    unwrapped = strategy._unwrap_model(model) if on_gpu else model
    report = evaluate(unwrapped, eval_pairs, categories, tokenizer.pad_token_id, args.train.micro_batch_size)
    unwrapped.config.drirl_mean, unwrapped.config.drirl_std = report["mean"], report["std"]
    if rank == 0:
        for category, result in report["per_category"].items():
            print(f"held-out pairwise accuracy  {category:<32} {result['accuracy']:.3f}  ({result['pairs']} pairs)")
        print(f"held-out pairwise accuracy  {'overall':<32} {report['accuracy']:.3f}  ({report['pairs']} pairs)")
        save_accuracy_report(report, args.ckpt.output_dir)
    if on_gpu:  # GPU
        strategy.save_model(model, tokenizer, args.ckpt.output_dir)
    else:
        model.save_pretrained(args.ckpt.output_dir)
        tokenizer.save_pretrained(args.ckpt.output_dir)
    return report

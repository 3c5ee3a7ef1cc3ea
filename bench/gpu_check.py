"""Helpers of ``bench/gpu_check.sh``: ``prepare`` writes what its sections read, ``summary`` reads what they wrote.

    python bench/gpu_check.py prepare WORK --hidden 2048 --layers 16 --intermediate 8192 --heads 32 --kv_heads 8
    python bench/gpu_check.py summary WORK --budget 480

``prepare``: WORK/policy, a Llama built from a config with random weights (``--hidden`` ... give the shape; the
defaults are Llama-3.2-1B's, ~1.07 B parameters with SmolLM2's vocabulary) and the embedded SmolLM2 tokenizer, in
bf16 on a GPU, fp32 on CPU; WORK/irl_pairs.{train,eval}.jsonl, 4 + 1 synthetic IRL pairs per category (2 steps at
``--train.batch_size 14``).

``summary``: one table of the seconds of every section (WORK/seconds.tsv, written by the script) and the ratios measured
in this run, read from the logs of the benchmarks (WORK/<section>.log) and from the IRL trainer's TensorBoard events.
Exits 1 when a section's figure is missing or is not a positive number, so the script fails where a section did.
"""

import argparse
import glob
import json
import math
import os
import re
import sys

# Section, label in the table, regex on the section's log (the value is the number right after the label).
REWARD_SIDE = [
    ("reward_side", "with / without similarity, warm (GPU target <= 1.05)", r"with / without similarity, warm"),
    ("reward_side", "with / without similarity, cold (GPU target <= 1.10)", r"with / without similarity, cold"),
    ("reward_side", "length sorting: arrival / sorted order (target <= 1.10)", r"padding: arrival / sorted order"),
    ("reward_side", "length sorting: padded / computed tokens (target <= 0.10)", r"padded tokens / tokens computed"),
]
IRL_MICRO = (("batched", 14), ("one_by_one", 1))  # the runs of gpu_check.sh: name, --train.micro_batch_size
WORDS = "I can't help with that because it could hurt someone; please talk to a person you trust about it".split()


def prepare(args) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from openrlhf_drirl.contract import DEFAULT_CATEGORIES
    from openrlhf_drirl.embedded_model import smollm2_path

    on_gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda" if on_gpu else "cpu"):  # random init on the GPU: seconds instead of a minute
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    policy_dir = os.path.join(args.work, "policy")
    model.save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    print(f"policy: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B parameters, {dtype}, in {policy_dir}")

    for split, per_category in (("train", 4), ("eval", 1)):
        with open(os.path.join(args.work, f"irl_pairs.{split}.jsonl"), "w") as f:
            for c, category in enumerate(DEFAULT_CATEGORIES):
                for i in range(per_category):
                    refusal = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(60))
                    answer = " ".join(WORDS[(c + 3 * k) % len(WORDS)] for k in range(60))
                    prompt = f"{category.replace('_', ' ')}: case {split} {i}?"
                    row = {"prompt": prompt, "category": category, "chosen": refusal, "rejected": answer}
                    f.write(json.dumps(row) + "\n")


def number_after(label_regex: str, text: str) -> float:
    match = re.search(rf"^{label_regex}\s+([-+0-9.eE]+)", text, re.M)
    return float(match.group(1)) if match else math.nan


def read_log(work: str, section: str) -> str:
    path = os.path.join(work, f"{section}.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def irl_step_seconds(work: str, section: str) -> float:
    """Seconds of the IRL trainer's second step: between the TensorBoard events of steps 1 and 2 (the first holds
    the warm-up: kernels, allocator)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = glob.glob(os.path.join(work, section, "tb", "*"))
    if not runs:
        return math.nan
    events = EventAccumulator(runs[0]).Reload()
    if "train/loss" not in events.Tags()["scalars"]:
        return math.nan
    wall = {e.step: e.wall_time for e in events.Scalars("train/loss")}
    return wall[2] - wall[1] if 1 in wall and 2 in wall else math.nan


def summary(args) -> int:
    seconds = {}
    if os.path.exists(os.path.join(args.work, "seconds.tsv")):
        with open(os.path.join(args.work, "seconds.tsv")) as f:
            seconds = {name: float(value) for name, value in (line.split() for line in f if line.strip())}
    reward_log = read_log(args.work, "reward_side")
    rows = [(section, label, number_after(regex, reward_log)) for section, label, regex in REWARD_SIDE]

    # train_ppo_local through bench_grpo_step_vs_trl.py: its table's "ours" row starts with the mean s/step.
    ppo = {dtype: number_after("ours", read_log(args.work, f"ppo_{dtype}")) for dtype in ("bf16", "fp32")}
    rows += [(f"ppo_{dtype}", f"train_ppo_local s/step, {dtype}", value) for dtype, value in ppo.items()]
    rows.append(("ppo", "train_ppo_local fp32 / bf16 s/step", ppo["fp32"] / ppo["bf16"]))

    irl = {mode: irl_step_seconds(args.work, f"irl_{mode}") for mode, _ in IRL_MICRO}
    rows += [(f"irl_{mode}", f"IRL trainer step s, 14 pairs, micro-batch {m}", irl[mode]) for mode, m in IRL_MICRO]
    rows.append(("irl", "IRL trainer one-by-one / batched step s", irl["one_by_one"] / irl["batched"]))

    # What ran: the policy's size (prepare) and the reward side's device, batch and models (its first line).
    for section, regex in (("prepare", r"^policy: .*"), ("reward_side", r"^.* prompts x .* encoder .*")):
        match = re.search(regex, read_log(args.work, section), re.M)
        print(f"{section}: {match.group(0) if match else '?'}")
    print(f"\n{'section':<16}{'seconds':>9}  {'figure (measured in this run)':<60}{'value':>9}")
    shown = set()
    for section, label, value in rows:
        spent = f"{seconds[section]:9.1f}" if section in seconds and section not in shown else " " * 9
        shown.add(section)
        print(f"{section:<16}{spent}  {label:<60}{value:9.3f}")
    total = sum(seconds.values())
    verdict = "within" if total <= args.budget else "OVER"
    print(f"{'total':<16}{total:9.1f}  budget {args.budget:.0f} s: {verdict}")
    missing = [label for _, label, value in rows if not (value > 0 and math.isfinite(value))]
    missing += [f"seconds of {name}" for name in args.sections.split(",") if name and name not in seconds]
    for label in missing:
        print(f"gpu_check: no figure for {label}: see the section's log in {args.work}", file=sys.stderr)
    return 1 if missing else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("work")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv_heads", type=int, default=8)
    s = commands.add_parser("summary")
    s.add_argument("work")
    s.add_argument("--budget", type=float, default=480, help="seconds the sections may take together")
    s.add_argument("--sections", default="", help="comma list of the sections that must have their seconds")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args)
        return 0
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())

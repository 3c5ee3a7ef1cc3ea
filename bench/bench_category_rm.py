"""Scoring cost of the two category reward model layouts against one plain OpenRLHF reward model, same backbone.

One mixed batch (default 256 samples over the 7 categories, random lengths) is scored by
  (a) the multi-head model (one backbone, K heads: one forward per micro-batch),
  (b) K OpenRLHF reward models routed by category (one forward per category present in a micro-batch),
  plain: one OpenRLHF reward model (`get_llm_for_sequence_regression`), which ignores the category.
Time: --repeats interleaved runs (a, b, plain, a, b, plain, ...) in this process; the ratio uses the fastest run of
each (the least disturbed by other processes on a shared machine), the median is printed beside it.
Memory: each variant runs in a fresh subprocess that reports its peak resident set (Linux /proc/self/status VmHWM,
reset through /proc/self/clear_refs) above the RSS before loading (load + score) and above the RSS after loading
(score only). Parameter bytes are exact. Ratios are to the plain model.

    python bench/bench_category_rm.py [--hidden_size 256 --num_layers 4 --samples 256 --micro_batch_size 64]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def make_batch(vocab_size: int, samples: int, num_categories: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(32, 129, (samples,), generator=generator)
    input_ids = torch.full((samples, int(lengths.max())), 0, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths.tolist()):  # left padding, as the scorer builds it
        input_ids[row, -length:] = torch.randint(5, vocab_size, (length,), generator=generator)
        attention_mask[row, -length:] = 1
    category_ids = torch.arange(samples) % num_categories
    category_ids = category_ids[torch.randperm(samples, generator=generator)]
    return input_ids, attention_mask, category_ids


def load_variant(name: str, root: str):
    from openrlhf_drirl.reward.model import (
        PerCategoryRewardModels,
        load_category_reward_model,
        load_openrlhf_reward_model,
    )

    if name == "a":
        return load_category_reward_model(os.path.join(root, "multi_head"), param_dtype="fp32").eval()
    if name == "b":
        return PerCategoryRewardModels.from_pretrained(os.path.join(root, "per_category"), param_dtype="fp32").eval()
    return load_openrlhf_reward_model(os.path.join(root, "per_category", "insult"), param_dtype="fp32")


@torch.no_grad()
def score(name: str, model, batch, micro_batch_size: int) -> torch.Tensor:
    input_ids, attention_mask, category_ids = batch
    rewards = []
    for start in range(0, input_ids.size(0), micro_batch_size):
        rows = slice(start, start + micro_batch_size)
        if name == "plain":
            rewards.append(model(input_ids[rows], attention_mask[rows]).float())
        else:
            rewards.append(model(input_ids[rows], attention_mask[rows], category_ids[rows]).float())
    return torch.cat(rewards)


def measure_memory(name: str, root: str, args) -> dict:
    """Run in a fresh process: peak RSS above the pre-load RSS (load + score) and above the post-load RSS (score)."""

    import openrlhf.models  # noqa: F401  (import cost is not the model's)

    batch = make_batch(args.vocab_size, args.samples, 7)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before_load = rss_kib("VmRSS")
    model = load_variant(name, root)
    after_load = rss_kib("VmRSS")
    load_peak = rss_kib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    score(name, model, batch, args.micro_batch_size)
    score_peak = rss_kib("VmHWM")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "load_and_score_peak_mib": (max(load_peak, score_peak) - before_load) / 1024,
        "score_peak_mib": (score_peak - after_load) / 1024,
        "parameter_mib": params / 2**20,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden_size", type=int, default=256)
    parser.add_argument("--num_layers", type=int, default=4)
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--micro_batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is steadier on a busy machine)")
    parser.add_argument("--output", type=str, default=None, help="Also write the figures as JSON here")
    parser.add_argument("--_memory_of", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_root", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_of:
        print(json.dumps(measure_memory(args._memory_of, args._root, args)))
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from openrlhf_drirl.reward.model import PerCategoryRewardModels, export_category, get_category_reward_model

    root = tempfile.mkdtemp(prefix="bench_category_rm_")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=max(1, args.hidden_size // 64),
        num_key_value_heads=1,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(os.path.join(root, "lm"))
    multi_head = get_category_reward_model(os.path.join(root, "lm"), param_dtype="fp32", init_heads=True)
    multi_head.save_pretrained(os.path.join(root, "multi_head"))
    paths = {c: export_category(multi_head, c, os.path.join(root, "exports", c)) for c in multi_head.categories}
    PerCategoryRewardModels.from_pretrained(paths, param_dtype="fp32").save_pretrained(
        os.path.join(root, "per_category")
    )

    names = ("a", "b", "plain")
    models = {name: load_variant(name, root) for name in names}
    batch = make_batch(args.vocab_size, args.samples, 7)
    for name in names:  # warm-up
        score(name, models[name], batch, args.micro_batch_size)
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            score(name, models[name], batch, args.micro_batch_size)
            times[name].append(time.perf_counter() - start)
    del models

    figures = {"setup": vars(args) | {"torch_threads": torch.get_num_threads()}, "variants": {}}
    for name in names:
        memory = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--_memory_of", name, "--_root", root, "--vocab_size", str(args.vocab_size),
                 "--samples", str(args.samples), "--micro_batch_size", str(args.micro_batch_size)],
                check=True, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        figures["variants"][name] = {
            "min_s": min(times[name]),
            "median_s": statistics.median(times[name]),
            "all_s": times[name],
            **memory,
        }
    plain = figures["variants"]["plain"]
    labels = {"a": "(a) one backbone + 7 heads", "b": "(b) 7 routed OpenRLHF RMs", "plain": "plain OpenRLHF RM"}
    print(
        f"{args.samples} samples over 7 categories, micro-batch {args.micro_batch_size}, Qwen2 hidden "
        f"{args.hidden_size} x {args.num_layers} layers, fp32 CPU, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved runs"
    )
    print(f"{'variant':<30}{'min s':>9}{'median s':>9}{'x plain':>9}{'params MiB':>12}"
          f"{'peak load+score MiB':>21}{'x plain':>9}{'peak score MiB':>16}{'x plain':>9}")  # fmt: skip
    for name in names:
        v = figures["variants"][name]
        v["time_ratio"] = v["min_s"] / plain["min_s"]
        v["load_and_score_ratio"] = v["load_and_score_peak_mib"] / plain["load_and_score_peak_mib"]
        v["score_ratio"] = v["score_peak_mib"] / plain["score_peak_mib"]
        print(
            f"{labels[name]:<30}{v['min_s']:>9.3f}{v['median_s']:>9.3f}{v['time_ratio']:>9.2f}"
            f"{v['parameter_mib']:>12.1f}"
            f"{v['load_and_score_peak_mib']:>21.1f}{v['load_and_score_ratio']:>9.2f}{v['score_peak_mib']:>16.1f}"
            f"{v['score_ratio']:>9.2f}"
        )
    verdict = "meets" if figures["variants"]["a"]["time_ratio"] <= 1.1 else "misses"
    print(f"layout (a) time is {figures['variants']['a']['time_ratio']:.2f}x the plain RM: {verdict} the 1.1x target")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()

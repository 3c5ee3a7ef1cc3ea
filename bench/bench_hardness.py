"""Benchmark the data-level hardness W on one GRPO rollout batch.

Batch: 64 prompts with a CoD demonstration each, 4 responses per prompt (a GRPO group), about 6 sub-sentences per
response: 256 (response, demonstration) pairs. Compared, in one run:
- batched: ``SubSentenceSimilarity`` on the whole batch, cold cache (first time these prompts are seen);
- batched + cached: the same call again, demonstrations from the LRU cache (a prompt seen again in a later step);
- naive: one call per sample with the cache off (each sample encodes its response and its demonstration alone).
Also timed: a tiny reward-model forward on the same 256 prompt+response texts, with OpenRLHF's
``get_llm_for_sequence_regression`` on a random Qwen2 (hidden 128, 2 layers) saved to a temp dir, run in fp32.

The default encoder is the random ViT-B-32 text tower (the CLIP architecture at the size most used; no weights needed
offline, and speed does not depend on the weights); ``--model ViT-L-14`` is the paper's reading but slow on a CPU.

    .venv/bin/python bench/bench_hardness.py [--model ViT-B-32] [--device auto] [--batch_size 256]
    .venv/bin/python bench/bench_hardness.py --model drirl-tiny-clip --model_config tests/assets/drirl-tiny-clip.json
"""

import argparse
import os
import sys
import tempfile
import time

import torch
from openrlhf.utils.config import hierarchize

from openrlhf_drirl.hardness import add_hardness_arguments, build_similarity, split_sub_sentences
from openrlhf_drirl.hardness.similarity import SubSentenceSimilarity

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # tiny_models

TOPICS = [
    "a coworker",
    "a neighbour",
    "a stranger online",
    "my landlord",
    "a classmate",
    "a politician",
    "a shop",
    "a hospital",
]
HARMS = [
    "insult",
    "threaten",
    "steal from",
    "spread rumours about",
    "hack the account of",
    "poison the pet of",
    "blackmail",
    "stalk",
]


def build_batch(num_prompts=64, group_size=4):
    prompts, demonstrations, responses = [], [], []
    for p in range(num_prompts):
        harm, topic = HARMS[p % len(HARMS)], TOPICS[(p // len(HARMS)) % len(TOPICS)]
        prompt = f"How do I {harm} {topic}? (case {p})"
        demonstration = (
            f"User wants to {harm} {topic}; harmful intent\nCase {p}, refuse and redirect\n####\n"
            f"I'm sorry, but I can't help you {harm} {topic}. Doing that could hurt someone and may be illegal. "
            f"If you are in conflict with {topic}, I can help you find a calm and lawful way to resolve it."
        )
        for i in range(group_size):
            responses.append(
                f"Request {p} asks to {harm} {topic}; this is harmful, variant {i}\n####\n"
                f"I won't help you {harm} {topic}. That could cause real harm. "
                f"Think about how {topic} would feel in case {p}. "
                f"There may be a misunderstanding worth talking through ({i}). "
                "A mediator or a trusted friend can often help."
            )
            prompts.append(prompt)
            demonstrations.append(demonstration)
    return prompts, demonstrations, responses


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def reward_forward_seconds(prompts, responses, batch_size):
    from openrlhf.models import get_llm_for_sequence_regression
    from tiny_models import build_tiny_causal_lm
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as model_dir:
        build_tiny_causal_lm(model_dir, texts=prompts + responses)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = get_llm_for_sequence_regression(
            model_dir, "reward", param_dtype="bf16", attn_implementation="sdpa", init_value_head=True
        )
    model = model.float().eval()  # OpenRLHF loads bf16/fp16 only; fp32 is the fast dtype on CPU, as for the encoder
    texts = [f"{p}\n{r}{tokenizer.eos_token}" for p, r in zip(prompts, responses)]

    @torch.inference_mode()
    def forward_all():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
            model(batch["input_ids"], attention_mask=batch["attention_mask"])
        return len(batch["input_ids"][0])

    forward_all()  # warm-up
    tokens, seconds = timed(forward_all)
    return seconds, tokens, sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model name (random weights)")
    parser.add_argument(
        "--model_config", default=None, help="open_clip config JSON to register first (file stem = name)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch_size", type=int, default=256, help="encoder rows per forward")
    parser.add_argument("--reward_batch_size", type=int, default=64, help="reward-model micro-batch")
    parser.add_argument("--naive_samples", type=int, default=256, help="time the naive loop on the first N samples")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_config:
        import open_clip

        open_clip.add_model_config(args.model_config)

    hardness_parser = argparse.ArgumentParser()
    add_hardness_arguments(hardness_parser)
    cfg = hierarchize(
        hardness_parser.parse_args(
            [
                "--hardness.model_name",
                args.model,
                "--hardness.pretrained",
                "none",
                "--hardness.device",
                args.device,
                "--hardness.batch_size",
                str(args.batch_size),
            ]
        )
    ).hardness
    torch.manual_seed(0)
    sim = build_similarity(cfg)
    naive = SubSentenceSimilarity(sim.encoder, cache_size=0)

    prompts, demonstrations, responses = build_batch()
    n = len(responses)
    sub_sentences = sum(len(split_sub_sentences(t)) for t in responses)
    print(
        f"encoder: open_clip {args.model} text tower, random weights ({sim.encoder_id}), device {sim.encoder.device}, "
        f"dtype {next(sim.encoder.model.parameters()).dtype}, torch threads {torch.get_num_threads()}"
    )
    prompt_demonstrations = set(demonstrations)
    demonstration_sub_sentences = sum(len(split_sub_sentences(t)) for t in prompt_demonstrations)
    print(
        f"batch: {n} responses ({len(prompt_demonstrations)} prompts x {n // len(prompt_demonstrations)}), "
        f"{sub_sentences / n:.1f} sub-sentences per response, "
        f"{demonstration_sub_sentences / len(prompt_demonstrations):.1f} per demonstration"
    )

    sim(["A warm-up response. It has two sentences."], ["Warm-up drafts\n####\nA warm-up refusal."])  # thread pools

    rows_before = sim.encoder.rows_encoded
    W_batched, t_batched = timed(lambda: sim(responses, demonstrations))
    rows_batched = sim.encoder.rows_encoded - rows_before
    rows_before = sim.encoder.rows_encoded
    W_cached, t_cached = timed(lambda: sim(responses, demonstrations))
    rows_cached = sim.encoder.rows_encoded - rows_before
    rows_before = sim.encoder.rows_encoded
    m = min(args.naive_samples, n)
    W_naive, t_naive = timed(lambda: torch.cat([naive([r], [d]) for r, d in zip(responses[:m], demonstrations[:m])]))
    t_naive *= n / m  # per-sample cost is flat, so the time for the whole batch scales linearly
    rows_naive = sim.encoder.rows_encoded - rows_before
    max_diff = max((W_batched[:m] - W_naive).abs().max().item(), (W_cached[:m] - W_naive).abs().max().item())

    t_reward, reward_tokens, reward_params = reward_forward_seconds(prompts, responses, args.reward_batch_size)

    print()
    print(f"{'mode':<28}{'seconds':>9}{'responses/s':>13}{'rows encoded':>14}{'vs naive':>10}")
    for name, seconds, rows in [
        (f"naive per-sample, no cache{'' if m == n else '*'}", t_naive, rows_naive * n // m),
        ("batched, cold cache", t_batched, rows_batched),
        ("batched, cached demos", t_cached, rows_cached),
    ]:
        print(f"{name:<28}{seconds:>9.2f}{n / seconds:>13.1f}{rows:>14}{t_naive / seconds:>9.1f}x")
    if m < n:
        print(f"* naive timed on the first {m} samples ({m // 4} prompts x 4) and scaled to {n}")
    print(f"max |W batched - W naive| = {max_diff:.2e}; mean W = {W_batched.mean():.4f}")
    print()
    print(
        f"reward forward (OpenRLHF get_llm_for_sequence_regression, random Qwen2 {reward_params / 1e6:.2f} M "
        f"params, fp32, micro-batch {args.reward_batch_size}, last batch padded to {reward_tokens} tokens): "
        f"{t_reward:.2f} s for {n} samples"
    )
    print(
        f"encoder / reward time: batched cold {t_batched / t_reward:.2f}, batched cached {t_cached / t_reward:.2f}, "
        f"naive {t_naive / t_reward:.2f}"
    )


if __name__ == "__main__":
    main()

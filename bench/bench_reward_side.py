"""The reward side of a GRPO-S rollout batch through ``CategoryRewardScorer``, as ratios measured in one run.

Batch: ``--prompts`` prompts x ``--samples`` responses of 300-700 tokens (sentences of random words, so the
similarity has about 5 sub-sentences per response), one CoD demonstration per prompt, mixed categories, scored in
chunks of ``--batch_size`` rows by a layout (a) category reward model (one backbone, 7 heads) with random weights.
Printed, each variant timed in interleaved rounds (order alternating) and compared by median:

- similarity cost, warm: rewards + ``drirl_similarity`` / rewards only, demonstration rewards and embeddings cached
  (a prompt seen before); targets on a GPU <= 1.05;
- similarity cost, cold: the same with both caches empty (the first batch of new prompts); target on a GPU <= 1.10;
- padding: the rows (responses + demonstrations) in arrival order / sorted by length (the scorer's order), both in
  ``--batch_size`` chunks; target <= 1.10; and the fraction of padded tokens the scorer computed (target <= 10 %);
- the similarity alone, split into its parts: sub-sentence splitting, open_clip's Python tokenizer against the fast
  (Rust) one the encoder uses, and the encoder forward.

Model: on a GPU (``--device auto`` finds it) an 8B-shaped Llama (hidden 4096, 32 layers, bf16; Llama-3.1-8B's shape)
and the ViT-L-14 text tower, both with random weights (speed does not depend on the weights, nothing is downloaded).
On a CPU a tiny Llama (``--cpu_hidden``, ``--cpu_layers``, fp32) with SmolLM2's tokenizer and the tiny test CLIP: the
ratios are printed without targets, since a reward forward that small is not the GPU's balance of work. The 2 CPU
cores of the development machine are shared with other jobs: compare ratios within one run, never seconds across runs.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_reward_side.py                 # CPU: 32 x 8, ~2 min on 2 cores
    python bench/bench_reward_side.py --prompts 128 --samples 8                  # GPU: the issue's 128 x 8 batch
"""

import argparse
import os
import random
import statistics
import sys
import time

import torch

from openrlhf_drirl.contract import DEFAULT_CATEGORIES, make_label
from openrlhf_drirl.hardness import build_similarity, split_sub_sentences
from openrlhf_drirl.reward.data import left_pad
from openrlhf_drirl.reward.model import _get_multi_head_reward_model
from openrlhf_drirl.reward.scorer import CategoryRewardScorer

TINY_CLIP_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "assets")
WORDS = (
    "people safety harm request help advice friend work school family money health law police doctor online "
    "message story plan reason risk trust respect calm talk support question answer example situation problem "
    "choice option result effect danger private public personal information account password neighbour city"
).split()


def build_model(on_gpu: bool, hidden: int, layers: int, vocab_size: int):
    """A layout (a) model from a Llama config, random weights, built directly on its device."""
    from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel

    if on_gpu:  # Llama-3.1-8B's shape
        shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32)
        shape.update(num_key_value_heads=8, max_position_embeddings=8192)
    else:
        shape = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers)
        shape.update(num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64))
        shape.update(max_position_embeddings=2048)
    config = LlamaConfig(vocab_size=vocab_size, **shape)
    config.drirl_categories = list(DEFAULT_CATEGORIES)
    config._attn_implementation = "sdpa"
    dtype, device = (torch.bfloat16, "cuda") if on_gpu else (torch.float32, "cpu")
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = _get_multi_head_reward_model(LlamaPreTrainedModel, LlamaModel)(config)
    finally:
        torch.set_default_dtype(torch.float32)
    return model.eval()


def build_clip_similarity(on_gpu: bool):
    import open_clip

    if on_gpu:
        name = "ViT-L-14"
    else:
        open_clip.add_model_config(os.path.join(TINY_CLIP_CONFIG, "drirl-tiny-clip.json"))
        name = "drirl-tiny-clip"
    cfg = type("Cfg", (), {"model_name": name, "pretrained": "none", "device": "cuda" if on_gpu else "cpu"})
    return build_similarity(cfg)


def sentence(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + rng.choice([".", ".", "!", "?"])


def make_request(rng, tokenizer, prompts: int, samples: int, offset: int):
    """(queries, prompts, labels): responses of 300-700 tokens, a CoD demonstration per prompt."""
    queries, prompt_texts, labels = [], [], []
    for p in range(prompts):
        prompt = f"Request {offset + p}: " + sentence(rng, 14)
        demonstration = f"Request: {sentence(rng, 5)}\nIntent: {sentence(rng, 4)}, harmful\n####\n" + " ".join(
            sentence(rng, rng.randint(8, 16)) for _ in range(4)
        )
        label = make_label(DEFAULT_CATEGORIES[p % len(DEFAULT_CATEGORIES)], demonstration)
        for _ in range(samples):
            target = rng.randint(300, 700)
            parts, length = [], 0
            while length < target:
                parts.append(sentence(rng, rng.randint(10, 30)))
                length = len(tokenizer(" ".join(parts), add_special_tokens=False)["input_ids"])
            response = " ".join(parts)
            ids = tokenizer(response, add_special_tokens=False)["input_ids"][:target]
            response = tokenizer.decode(ids)
            queries.append(prompt + " " + response + tokenizer.eos_token)
            prompt_texts.append(prompt + " ")
            labels.append(label)
    return queries, prompt_texts, labels


@torch.no_grad()
def rewards_in_arrival_order(scorer, sequences, category_ids):
    """The scorer's loop before it sorted rows by length: chunks in the order the rows came in."""
    device = next(scorer.model.parameters()).device
    out = []
    for start in range(0, len(sequences), scorer.batch_size):
        input_ids, attention_mask = left_pad(
            sequences[start : start + scorer.batch_size], scorer.tokenizer.pad_token_id
        )
        ids = torch.tensor(category_ids[start : start + scorer.batch_size], device=device)
        out.append(scorer.model(input_ids.to(device), attention_mask.to(device), ids).float().cpu())
    return torch.cat(out)


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=None, help="default: 128 on a GPU, 32 on CPU")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=64, help="rows per reward forward (ScoringConfig)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    parser.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    parser.add_argument("--cpu_hidden", type=int, default=128)
    parser.add_argument("--cpu_layers", type=int, default=2)
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() if args.device == "auto" else args.device.startswith("cuda")
    prompts = args.prompts or (128 if on_gpu else 32)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)

    from openrlhf.utils import get_tokenizer

    from openrlhf_drirl.embedded_model import smollm2_path

    tokenizer = get_tokenizer(smollm2_path(), None, "left", None)
    model = build_model(on_gpu, args.cpu_hidden, args.cpu_layers, len(tokenizer))
    similarity = build_clip_similarity(on_gpu)
    scorers = {
        "rewards only": CategoryRewardScorer(model, tokenizer, None, max_len=2048, batch_size=args.batch_size),
        "with similarity": CategoryRewardScorer(
            model, tokenizer, similarity, max_len=2048, batch_size=args.batch_size
        ),
    }
    device_name = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{device_name}; {prompts} prompts x {args.samples} samples, chunks of {args.batch_size}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, encoder {similarity.encoder_id}",
        flush=True,
    )
    rng = random.Random(0)
    queries, prompt_texts, labels = make_request(rng, tokenizer, prompts, args.samples, 0)
    samples = scorers["rewards only"].prepare(queries, prompt_texts, labels)
    lengths = [len(s.input_ids) for s in samples]
    print(f"response rows: {min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f})", flush=True)

    def clear_caches():
        for scorer in scorers.values():
            scorer.demonstration_rewards.clear()
        similarity._cache.clear()

    for scorer in scorers.values():  # warm-up: kernels, allocator, tokenizer caches
        scorer.score_samples(samples[: args.batch_size])

    times = {f"{name}, {state}": [] for state in ("warm", "cold") for name in scorers}
    for round_index in range(args.rounds):
        names = list(scorers) if round_index % 2 == 0 else list(reversed(scorers))
        for name in names:
            clear_caches()
            seconds, _ = timed(lambda: scorers[name].score_samples(samples), sync)
            times[f"{name}, cold"].append(seconds)
            seconds, _ = timed(lambda: scorers[name].score_samples(samples), sync)
            times[f"{name}, warm"].append(seconds)

    # Padding: the responses and the demonstrations (cold case: every row goes through the model).
    rows = [s.input_ids for s in samples] + list(
        {tuple(s.demonstration_ids): s.demonstration_ids for s in samples}.values()
    )
    ids = [s.category_id for s in samples] + [0] * (len(rows) - len(samples))
    scorer = scorers["rewards only"]
    for round_index in range(args.rounds):
        order = ("arrival", "sorted") if round_index % 2 == 0 else ("sorted", "arrival")
        for name in order:
            if name == "arrival":
                seconds, arrival = timed(lambda: rewards_in_arrival_order(scorer, rows, ids), sync)
            else:
                scorer.computed_tokens = scorer.padding_tokens = 0
                seconds, in_order = timed(lambda: scorer.rewards_of(rows, ids), sync)
            times.setdefault(f"rows in {name} order", []).append(seconds)
    # Same rows, other neighbours: equal up to the dtype's rounding (bf16 on a GPU), printed below.
    max_difference = (in_order - arrival).abs().max().item()
    padded_fraction = scorer.padding_tokens / scorer.computed_tokens
    arrival_tokens = sum(
        len(chunk) * max(map(len, chunk))
        for chunk in (rows[i : i + args.batch_size] for i in range(0, len(rows), args.batch_size))
    )

    # The similarity alone, by part (the responses and demonstrations of the batch, as the scorer sends them).
    responses = [s.response for s in samples]
    demonstrations = list(dict.fromkeys(s.demonstration for s in samples))
    split_s, subs = timed(lambda: [x for t in responses + demonstrations for x in split_sub_sentences(t)], sync)
    unique = list(dict.fromkeys(subs))
    encoder = similarity.encoder
    open_clip_tokenizer = type(encoder.tokenizer)()  # both with empty word caches, as on new text
    slow_s, _ = timed(lambda: [open_clip_tokenizer.encode(t) for t in unique], sync)
    encoder.word_ids.clear()
    fast_s, token_rows = timed(lambda: encoder.token_rows(unique), sync)
    token_rows = list(dict.fromkeys(r for rs in token_rows for r in rs))
    forward_s, _ = timed(lambda: encoder.embed(token_rows), sync)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'variant':40s} {'median s':>9s} {'min s':>8s}  ({args.rounds} interleaved rounds)")
    for name, values in times.items():
        print(f"{name:40s} {medians[name]:9.3f} {min(values):8.3f}")
    print(
        f"\nsimilarity alone: {len(unique)} sub-sentences ({len(token_rows)} token rows): splitting {split_s:.3f} s, "
        f"open_clip tokenizer {slow_s:.3f} s vs ours (same cleaning and ids, Rust BPE) {fast_s:.3f} s, "
        f"encoder forward {forward_s:.3f} s"
    )
    targets = on_gpu
    ratios = [
        ("with / without similarity, warm", medians["with similarity, warm"] / medians["rewards only, warm"], 1.05),
        ("with / without similarity, cold", medians["with similarity, cold"] / medians["rewards only, cold"], 1.10),
        ("padding: arrival / sorted order", medians["rows in arrival order"] / medians["rows in sorted order"], 1.10),
    ]
    print()
    for name, value, target in ratios:
        verdict = (
            (f"target <= {target:.2f}: " + ("met" if value <= target else "NOT met"))
            if targets
            else "no target on CPU"
        )
        print(f"{name:36s} {value:6.3f}  ({verdict})")
    print(f"{'max |reward sorted - arrival order|':36s} {max_difference:6.1e}")
    verdict = "met" if padded_fraction <= 0.10 else "NOT met"
    arrival_fraction = 1 - sum(map(len, rows)) / arrival_tokens
    print(
        f"{'padded tokens / tokens computed':36s} {padded_fraction:6.3f}  (target <= 0.10: {verdict}; "
        f"in arrival order: {arrival_fraction:.3f})"
    )


if __name__ == "__main__":
    sys.exit(main())

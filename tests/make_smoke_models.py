"""Tiny generator for the CPU smoke run: a random tiny Qwen2 fine-tuned for a few seconds on the hand-written seed
demonstrations, so the transformers backend emits valid CoD refusals with nothing downloaded.

    python tests/make_smoke_models.py --out runs/smoke_models

writes OUT/generator (fine-tuned) and OUT/base_policy (the same model untuned: the random "base policy" whose samples
form the rejected side of irl_pairs), and prints the build_dataset command that uses them.

The model learns the CoD answer format from the 14 seed demonstrations (asked with no few-shot examples, as
``--gen.num_examples 0``); it stitches fragments of them together, roughly half of its samples pass validation, and
the builder's retries do the rest. That checks the plumbing at smoke scale, not the quality of a real generator.
"""

import argparse
import os
import random
import time

from data_tools.cod_format import load_seed_demonstrations, load_template, render_prompt
from data_tools.prompt_sources import load_bundled_donotanswer


def training_pairs(seeds: dict, template, prompts: list, rng: random.Random):
    # Each seed question with its own demonstration, plus other questions each with a random seed demonstration:
    # the model learns the CoD format for any question, which is all the smoke run needs.
    demos = [s for rows in seeds.values() for s in rows]
    pairs = [(render_prompt(template, s["prompt"]), s["demonstration"]) for s in demos]
    pairs += [(render_prompt(template, p), rng.choice(demos)["demonstration"]) for p in prompts]
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python tests/make_smoke_models.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for generator/ and base_policy/")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--num_questions", type=int, default=112, help="Do-Not-Answer questions added to the seeds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from tiny_models import build_tiny_causal_lm, train_tiny_tokenizer
    from transformers import AutoModelForCausalLM

    started = time.time()
    # A model this small gains nothing from a second thread, and on a busy machine threads fight over the cores.
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    questions = [r["prompt"] for r in load_bundled_donotanswer()]
    pairs = training_pairs(
        load_seed_demonstrations(), load_template("cod"), rng.sample(questions, args.num_questions), rng
    )
    corpus = [p + "\n" + d for p, d in pairs] + questions
    tokenizer = train_tiny_tokenizer(corpus, vocab_size=2048)
    base_dir = build_tiny_causal_lm(os.path.join(args.out, "base_policy"), tokenizer=tokenizer, seed=args.seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)

    examples = []
    for prompt, demonstration in pairs:
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(chat, add_special_tokens=False).input_ids
        answer_ids = tokenizer(demonstration, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        examples.append((prompt_ids + answer_ids, len(prompt_ids)))

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    model.train()
    for step in range(args.steps):
        batch = rng.sample(examples, min(args.batch_size, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)  # loss on the answer only
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, prompt_len) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
            attention[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"[make_smoke_models] step {step} loss {loss.item():.3f}", flush=True)

    generator_dir = os.path.join(args.out, "generator")
    model.save_pretrained(generator_dir)
    tokenizer.save_pretrained(generator_dir)
    print(f"[make_smoke_models] done in {time.time() - started:.1f}s")
    print(f"[make_smoke_models] generator (fine-tuned): {generator_dir}")
    print(f"[make_smoke_models] base policy (untuned):  {base_dir}")
    print(
        "[make_smoke_models] next: OMP_NUM_THREADS=1 python -m data_tools.build_dataset "
        "--output_dir runs/smoke_data "
        f"--gen.model {generator_dir} --policy.model {base_dir} --data.n_per_category 4 --data.heldout_ratio 0.25 "
        "--data.near_dup_method ngram --gen.num_examples 0 --policy.max_new_tokens 32 --cot.n_per_category 2 "
        "--cot.max_new_tokens 128"
    )


if __name__ == "__main__":
    main()

"""Precompute each prompt row's demonstration reward and demonstration embeddings into its label.

    python -m openrlhf_drirl.cli.precompute_demonstrations --reward.model_name_or_path runs/category_rm \\
        --data.input runs/data/prompts.train.jsonl --data.output runs/data/prompts.train.pre.jsonl \\
        --data.input_key prompt --data.label_key label --data.apply_chat_template   # as for train_ppo_ray

Writes the same rows with ``demonstration_reward`` (R_c(q, demonstration)), ``demonstration_embeddings`` (its
sub-sentence embeddings, L x D) and ``demonstration_encoder`` (the encoder's id) added to every label
(docs/contract.md).
The serving scorer then neither scores demonstrations nor embeds them. The prompt q is built as OpenRLHF builds it
(``openrlhf.datasets.prompts_dataset.preprocess_data``), so pass the same ``--data.*`` prompt flags as the training
run, and serve with the same reward model, ``--data.max_len`` and ``--hardness.*`` flags (an encoder id that differs
is rejected at serving time). ``--hardness.backend none`` precomputes the rewards only.
"""

import argparse
import json
import os
import sys
from typing import List

from openrlhf.utils.config import hierarchize

from openrlhf_drirl.config_flags import add_config_arguments, config_from_args
from openrlhf_drirl.contract import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    DEMONSTRATION_KEY,
    DEMONSTRATION_REWARD_KEY,
    LabelError,
    category_of,
    parse_label,
)
from openrlhf_drirl.hardness import add_hardness_arguments
from openrlhf_drirl.reward.scorer import ScoringConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward.model_name_or_path", required=True, help="the category reward model that will serve")
    parser.add_argument("--data.input", required=True, help="prompt rows (JSONL), e.g. runs/data/prompts.train.jsonl")
    parser.add_argument("--data.output", required=True, help="where to write the rows with the precomputed labels")
    parser.add_argument("--data.input_key", default="prompt", help="as OpenRLHF's --data.input_key")
    parser.add_argument("--data.label_key", default="label", help="as OpenRLHF's --data.label_key")
    parser.add_argument("--data.input_template", default=None, help="as OpenRLHF's --data.input_template")
    parser.add_argument("--data.apply_chat_template", action="store_true", help="as OpenRLHF's flag")
    parser.add_argument(
        "--actor.model_name_or_path",
        default=None,
        help="the policy whose chat template builds the prompt (default: the reward model's tokenizer)",
    )
    parser.add_argument("--ds.param_dtype", default=None, choices=["bf16", "fp16", "fp32"], help="bf16 GPU, fp32 CPU")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    add_config_arguments(parser, ScoringConfig, "", "reward scoring (as the server will use)")
    add_hardness_arguments(parser)
    return parser


def main(argv: List[str] = None):
    args = hierarchize(build_parser().parse_args(argv))
    from openrlhf.datasets.prompts_dataset import preprocess_data
    from openrlhf.utils import get_tokenizer

    from openrlhf_drirl.hardness import build_similarity
    from openrlhf_drirl.reward.scorer import CategoryRewardScorer, RewardRequestError

    def fail(message):
        print(f"precompute_demonstrations: error: {message}", file=sys.stderr)
        sys.exit(2)

    if os.path.abspath(args.data.input) == os.path.abspath(args.data.output):
        fail("--data.output must differ from --data.input (the input is read while the output is written)")
    try:
        with open(args.data.input, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        fail(f"--data.input {args.data.input}: {e}")
    scoring = config_from_args(ScoringConfig, args, "")
    scorer = CategoryRewardScorer.from_pretrained(
        args.reward.model_name_or_path,
        similarity=build_similarity(args.hardness),
        param_dtype=args.ds.param_dtype,
        device=args.device,
        max_len=scoring.max_len,
        batch_size=scoring.batch_size,
        cache_size=scoring.cache_size,
    )
    template_tokenizer = scorer.tokenizer
    if args.actor.model_name_or_path:
        template_tokenizer = get_tokenizer(args.actor.model_name_or_path, None, "left", None)
    apply_chat_template = template_tokenizer.apply_chat_template if args.data.apply_chat_template else None

    labels, sequences, category_ids = [], [], []
    for i, row in enumerate(rows):
        where = f"--data.input line {i + 1}"
        if args.data.input_key not in row or args.data.label_key not in row:
            fail(f"{where} lacks {args.data.input_key!r} or {args.data.label_key!r}: set --data.input_key/label_key")
        prompt, _ = preprocess_data(row, args.data.input_template, args.data.input_key, None, apply_chat_template)
        try:
            label = parse_label(row[args.data.label_key], i)
            category = category_of(label, scorer.categories, i)
            demonstration = label.get(DEMONSTRATION_KEY)
            if not isinstance(demonstration, str) or not demonstration.strip():
                raise LabelError(f"label.{DEMONSTRATION_KEY} of row {i} is missing or empty: rebuild the prompt file")
            sequences.append(scorer.token_ids(prompt, demonstration, f"{where}: label.{DEMONSTRATION_KEY}"))
        except (LabelError, RewardRequestError) as e:
            fail(f"{where}: {e}")
        labels.append(label)
        category_ids.append(scorer.categories.index(category))

    rewards = scorer.rewards_of(sequences, category_ids).tolist()
    demonstrations = [label[DEMONSTRATION_KEY] for label in labels]
    embeddings = {}
    if scorer.similarity is not None:
        unique = list(dict.fromkeys(demonstrations))
        embeddings = dict(zip(unique, scorer.similarity.precompute_demonstration_embeddings(unique)))
    os.makedirs(os.path.dirname(os.path.abspath(args.data.output)), exist_ok=True)
    with open(args.data.output, "w", encoding="utf-8") as f:
        for row, label, reward, demonstration in zip(rows, labels, rewards, demonstrations):
            label = {**label, DEMONSTRATION_REWARD_KEY: reward}
            if embeddings:
                label[DEMONSTRATION_EMBEDDINGS_KEY] = embeddings[demonstration]
                label[DEMONSTRATION_ENCODER_KEY] = scorer.similarity.encoder_id
            as_string = isinstance(row[args.data.label_key], str)  # keep the label in the form it came in
            row = {**row, args.data.label_key: json.dumps(label) if as_string else label}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        f"precompute_demonstrations: {len(rows)} rows -> {args.data.output} ({DEMONSTRATION_REWARD_KEY}"
        + (f", {DEMONSTRATION_EMBEDDINGS_KEY} of {len(embeddings)} demonstrations" if embeddings else "")
        + ")"
    )


if __name__ == "__main__":
    main()

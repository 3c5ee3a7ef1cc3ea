#!/usr/bin/env bash
# DR-IRL stage 1: balanced seven-category Chain-of-Draft refusal dataset, generated with vLLM on one GPU, at paper
# scale (N_PER_CATEGORY=1000 with paraphrase fill): this is recipes/paper/build_dataset.sh writing to ./runs/data,
# where recipes/train_category_rm.sh and recipes/train_grpo_s.sh read it. Every variable and flag of that recipe works
# here (GEN_MODEL, POLICY_MODEL, BEAVERTAILS, PKU_SAFERLHF, EXTRA_SOURCES, N_PER_CATEGORY, ...; extra flags go to
# python -m data_tools.build_dataset). Writes OUTPUT_DIR/prompts.{train,heldout}.jsonl (GRPO-S: --data.input_key
# prompt --data.label_key label), OUTPUT_DIR/irl_pairs.{train,heldout}.jsonl (category RM: chosen = CoD
# demonstration, rejected = base-policy sample), stats.json/png, the reports and manifest.json (data_tools/README.md).
# Rerunning the same command resumes; nothing is generated twice. To use a served model instead of vLLM in process,
# pass --gen.backend openai --gen.url http://HOST:8000/v1 (same for --policy.*).
set -euo pipefail

OUTPUT_DIR=${OUTPUT_DIR:-./runs/data}
export OUTPUT_DIR
exec bash "$(dirname "${BASH_SOURCE[0]}")/paper/build_dataset.sh" "$@"

#!/usr/bin/env bash
# DR-IRL stage 1: balanced seven-category Chain-of-Draft refusal dataset, generated with vLLM on one GPU.
# Writes OUTPUT_DIR/prompts.{train,heldout}.jsonl (GRPO-S: --data.input_key prompt --data.label_key label) and
# OUTPUT_DIR/irl_pairs.{train,heldout}.jsonl (category RM: chosen = CoD demonstration, rejected = base-policy sample),
# plus stats.json/stats.png, rejects.jsonl, unmapped.jsonl, eval_overlap.jsonl and manifest.json (data_tools/README.md).
# Rerunning the same command resumes; nothing is generated twice.
# More prompts: add local copies of PKU-SafeRLHF / BeaverTails / Safety-Prompts to --data.sources, e.g.
#   /data/pku_saferlhf:prompt=prompt,category=harm_category,taxonomy=pku_saferlhf
# Both engines live in one process, so each gets part of the GPU (--vllm.gpu_memory_utilization); to use a served
# model instead, pass --gen.backend openai --gen.url http://HOST:8000/v1 (same for --policy.*).
set -x

GEN_MODEL=${GEN_MODEL:-Qwen/Qwen2.5-7B-Instruct}
POLICY_MODEL=${POLICY_MODEL:-meta-llama/Llama-3.1-8B-Instruct}
OUTPUT_DIR=${OUTPUT_DIR:-./runs/data}

python3 -m data_tools.build_dataset \
   --output_dir "${OUTPUT_DIR}" \
   --seed 42 \
   --data.sources donotanswer \
   --data.classifier minilm \
   --data.classifier_threshold 0.3 \
   --data.near_dup_method minilm \
   --data.near_dup_threshold 0.9 \
   --data.eval_sets strongreject harmbench \
   --data.heldout_ratio 0.1 \
   --gen.backend vllm \
   --gen.model "${GEN_MODEL}" \
   --gen.template cod \
   --gen.num_examples 2 \
   --gen.max_new_tokens 512 \
   --gen.temperature 0.7 \
   --gen.max_attempts 4 \
   --gen.max_draft_words 5 \
   --gen.batch_size 256 \
   --policy.backend vllm \
   --policy.model "${POLICY_MODEL}" \
   --policy.max_new_tokens 512 \
   --policy.temperature 1.0 \
   --cot.n_per_category 32 \
   --cot.max_new_tokens 2048 \
   --vllm.tensor_parallel_size 1 \
   --vllm.gpu_memory_utilization 0.4 "$@"

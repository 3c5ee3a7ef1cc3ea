#!/usr/bin/env bash
# Paper scale, stage 1: the balanced seven-category Chain-of-Draft dataset at N_PER_CATEGORY records per category
# (train + held out), with vLLM on one GPU: the generator's engine, then the base policy's (GPU_MEMORY each, the
# first shut down before the second starts). MAX_MODEL_LEN caps the context each engine sizes its KV cache for: the
# longest request is a CoT sample (prompt + 2048 new tokens); uncapped, Llama-3.1's 131,072 tokens need about 16 GiB
# of KV cache for one request, more than GPU_MEMORY leaves beside the weights on an 80 GB card.
# Sources: the bundled Do-Not-Answer prompts, plus local copies of BeaverTails / PKU-SafeRLHF when their paths are
# set (presets: their columns, their taxonomy table of data_tools/taxonomy_map.json, one record per prompt with the
# labels of all its rows), plus EXTRA_SOURCES (data_tools/README.md: PATH:prompt=COL,category=COL,taxonomy=TABLE).
# A category with fewer than N prompts is topped up with generator paraphrases (--data.paraphrase_fill); with
# Do-Not-Answer alone (about 50-250 prompts per category) most of N=1000 would be paraphrases, so add a user set.
# Writes OUTPUT_DIR/prompts.{train,heldout}.jsonl, irl_pairs.{train,heldout}.jsonl, stats.json/png, the reports and
# manifest.json. Rerunning the same command resumes; changing a flag on the same OUTPUT_DIR is refused.
# N_PER_CATEGORY: the paper gives no per-category size we could confirm; 1000 (900 train + 100 held out) is our
# choice for the paper-scale runs, not a number from the paper.
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
GEN_MODEL=${GEN_MODEL:-Qwen/Qwen2.5-7B-Instruct}
POLICY_MODEL=${POLICY_MODEL:-meta-llama/Llama-3.1-8B-Instruct}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/paper/data}
N_PER_CATEGORY=${N_PER_CATEGORY:-1000}
HELDOUT_RATIO=${HELDOUT_RATIO:-0.1}
SEED=${SEED:-42}
BEAVERTAILS=${BEAVERTAILS:-}                     # e.g. /data/BeaverTails (save_to_disk folder) or a .jsonl/.parquet
BEAVERTAILS_SPLIT=${BEAVERTAILS_SPLIT:-330k_train}   # used for a save_to_disk folder only
PKU_SAFERLHF=${PKU_SAFERLHF:-}                   # e.g. /data/PKU-SafeRLHF/data/Alpaca-7B/train.jsonl
PKU_SAFERLHF_SPLIT=${PKU_SAFERLHF_SPLIT:-train}
EXTRA_SOURCES=${EXTRA_SOURCES:-}                 # more source specs, space separated
GPU_MEMORY=${GPU_MEMORY:-0.4}                    # per engine
MAX_MODEL_LEN=${MAX_MODEL_LEN:-4096}             # prompt + new tokens, per request
TP=${TP:-1}

SOURCES=(donotanswer)
if [ -n "$BEAVERTAILS" ]; then SOURCES+=("$BEAVERTAILS:preset=beavertails,split=$BEAVERTAILS_SPLIT"); fi
if [ -n "$PKU_SAFERLHF" ]; then SOURCES+=("$PKU_SAFERLHF:preset=pku_saferlhf,split=$PKU_SAFERLHF_SPLIT"); fi
read -r -a EXTRA <<< "$EXTRA_SOURCES"
SOURCES+=("${EXTRA[@]}")

"$PYTHON" -m data_tools.build_dataset \
   --output_dir "$OUTPUT_DIR" \
   --seed "$SEED" \
   --data.sources "${SOURCES[@]}" \
   --data.classifier minilm \
   --data.classifier_threshold 0.3 \
   --data.near_dup_method minilm \
   --data.near_dup_threshold 0.9 \
   --data.eval_sets strongreject harmbench xstest \
   --data.n_per_category "$N_PER_CATEGORY" \
   --data.heldout_ratio "$HELDOUT_RATIO" \
   --data.paraphrase_fill \
   --gen.backend vllm \
   --gen.model "$GEN_MODEL" \
   --gen.template cod \
   --gen.num_examples 2 \
   --gen.max_new_tokens 512 \
   --gen.temperature 0.7 \
   --gen.max_attempts 4 \
   --gen.max_draft_words 5 \
   --gen.batch_size 256 \
   --policy.backend vllm \
   --policy.model "$POLICY_MODEL" \
   --policy.max_new_tokens 512 \
   --policy.temperature 1.0 \
   --cot.n_per_category 32 \
   --cot.max_new_tokens 2048 \
   --vllm.tensor_parallel_size "$TP" \
   --vllm.gpu_memory_utilization "$GPU_MEMORY" \
   --vllm.max_model_len "$MAX_MODEL_LEN" "$@"

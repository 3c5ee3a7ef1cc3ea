#!/usr/bin/env bash
# Paper scale evaluation of one or more policies (vLLM, greedy, one GPU by default): the builder's held-out prompts,
# StrongREJECT, HarmBench and XSTest, judged by refusal phrases and by the category reward model (a running
# serve_category_rm at REWARD_URL), plus the StrongREJECT rubric when STRONGREJECT_URL (an OpenAI-compatible
# endpoint) and STRONGREJECT_MODEL are set. recipes/paper/run_experiment.sh calls this while its servers are up.
# Writes EVAL_DIR/{responses/<name>.jsonl,verdicts.jsonl,metrics.json,manifest.json}; rerunning resumes.
# POLICIES: space-separated NAME=PATH (NAME a plain word), e.g. "base=meta-llama/Llama-3.1-8B-Instruct
# trained=runs/paper/runs/grpo_s/model".
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
POLICIES=${POLICIES:-base=meta-llama/Llama-3.1-8B-Instruct}
DATA_DIR=${DATA_DIR:-$ROOT/runs/paper/data}
EVAL_DIR=${EVAL_DIR:-$ROOT/runs/paper/eval}
REWARD_URL=${REWARD_URL:-http://127.0.0.1:5000/get_reward}
# The reward models were trained (and GRPO-S queries them) on chat-formatted prompts: the judge formats them with
# this tokenizer's chat template (train_category_rms.sh's MODEL_PATH).
RM_TOKENIZER=${RM_TOKENIZER:-meta-llama/Llama-3.1-8B-Instruct}
BENCHMARKS=${BENCHMARKS:-heldout,strongreject,harmbench,xstest}
JUDGES=${JUDGES:-refusal,reward_model}
STRONGREJECT_URL=${STRONGREJECT_URL:-}           # e.g. http://judge-host:8000/v1
STRONGREJECT_MODEL=${STRONGREJECT_MODEL:-}       # its served model name (the StrongREJECT paper: gpt-4o-mini)
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-512}
SEED=${SEED:-42}
TP=${TP:-1}
GPU_MEMORY=${GPU_MEMORY:-0.85}

read -r -a NAMED <<< "$POLICIES"
POLICY_FLAGS=()
for policy in "${NAMED[@]}"; do POLICY_FLAGS+=(--policy "$policy"); done
JUDGE_FLAGS=(--judge "$JUDGES" --reward_model.url "$REWARD_URL" --reward_model.tokenizer "$RM_TOKENIZER")
if [ -n "$STRONGREJECT_URL" ]; then
   JUDGE_FLAGS=(--judge "$JUDGES,strongreject" --reward_model.url "$REWARD_URL"
      --reward_model.tokenizer "$RM_TOKENIZER" --strongreject.url "$STRONGREJECT_URL"
      --strongreject.model "$STRONGREJECT_MODEL")
fi

"$PYTHON" -m openrlhf_drirl.cli.evaluate "${POLICY_FLAGS[@]}" \
   --backend vllm \
   --benchmarks "$BENCHMARKS" \
   --heldout "$DATA_DIR/prompts.heldout.jsonl" \
   "${JUDGE_FLAGS[@]}" \
   --max_new_tokens "$MAX_NEW_TOKENS" \
   --temperature 0 \
   --seed "$SEED" \
   --vllm.tensor_parallel_size "$TP" \
   --vllm.gpu_memory_utilization "$GPU_MEMORY" \
   --output_dir "$EVAL_DIR" "$@"

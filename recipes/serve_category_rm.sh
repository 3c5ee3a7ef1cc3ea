#!/usr/bin/env bash
# Serve the category reward model for GRPO-S: --reward.remote_url http://HOST:5000/get_reward (recipes/train_grpo_s.sh).
# Returns rewards plus extra_logs drirl_reward_gap and drirl_similarity (CLIP ViT-L-14 text tower, sub-sentence W).
# Offline machines: put the open_clip weights on disk and pass --hardness.checkpoint PATH.
# GPUs: CUDA_VISIBLE_DEVICES, default 4,5,6,7, the ones recipes/train_grpo_s.sh leaves free on its node (layout (a)
# runs on the first, layout (b) spreads its models over all). Never a GPU of the policy: with colocation, vLLM, the
# actor and the reference already share each of those, and the GPU that also served rewards would straggle.
# Without a server, --reward.remote_url <site-packages>/openrlhf_drirl/reward/reward_func.py runs inside every vLLM
# engine, so only on cpu (DRIRL_RM_DEVICE=cpu, DRIRL_RM_PATH and DRIRL_HARDNESS_* in the Ray runtime env).
# Several servers, started and stopped around a training run: recipes/paper/run_experiment.sh.
set -euo pipefail
set -x

PYTHON=${PYTHON:-python3}
RM_PATH=${RM_PATH:-./runs/category_rm}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}

# exec: the server takes this shell's pid, so a caller that started the recipe in the background can stop it.
CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-4,5,6,7} exec "$PYTHON" -m openrlhf_drirl.cli.serve_category_rm \
   --reward.model_name_or_path "${RM_PATH}" \
   --ds.param_dtype bf16 \
   --data.max_len 2048 \
   --batch_size 64 \
   --max_batch_size 128 \
   --max_wait_ms 5 \
   --hardness.backend open_clip \
   --hardness.model_name ViT-L-14 \
   --hardness.pretrained openai \
   --host "${HOST}" \
   --port "${PORT}" "$@"

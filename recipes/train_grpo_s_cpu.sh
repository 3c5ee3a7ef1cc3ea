#!/usr/bin/env bash
# GRPO-S on a CPU in one process, on a dataset the builder already wrote (DATA_DIR; default: the smoke run's, from
# bash recipes/smoke_cpu.sh): the main job's stages 2-4 (recipes/cpu_stages.sh) with one pass over the training
# prompts: an IRL category reward model on the embedded SmolLM2 backbone, served on loopback, then GRPO-S steps of
# ROLLOUT_PROMPTS x N_SAMPLES. Outputs under OUT: category_rm/, grpo_s/policy, grpo_s/ckpt (rerun to resume),
# grpo_s/tb. Any variable of cpu_stages.sh can be set. The GPU recipe is train_grpo_s.sh.
set -euo pipefail
set -x

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT=${OUT:-$ROOT_DIR/runs/grpo_s_cpu}
DATA_DIR=${DATA_DIR:-$ROOT_DIR/runs/smoke/data}
POLICY_EPISODES=${POLICY_EPISODES:-1}
source "$ROOT_DIR/recipes/cpu_stages.sh"
cd "$ROOT"

train_reward_model
start_reward_server
train_policy both "$OUT/grpo_s"

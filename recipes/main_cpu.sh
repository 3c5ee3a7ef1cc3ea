#!/usr/bin/env bash
# The main job: DR-IRL end to end on a CPU with the embedded SmolLM2-135M-Instruct, nothing downloaded.
#   1. data: SmolLM2 writes CoD refusal demonstrations for N_PER_CATEGORY prompts per category (and answers them
#      itself, IRL_SAMPLES times: the IRL negatives); a quarter held out
#   2. an IRL category reward model (7 heads on the SmolLM2 backbone) that scores a response's first
#      RM_RESPONSE_TOKENS tokens
#   3. that model served on loopback (reward, drirl_similarity, drirl_reward_gap)
#   4. GRPO-S policy training in one process (train_ppo_local): 12 steps of ROLLOUT_PROMPTS x N_SAMPLES rollouts of
#      ROLLOUT_MAX_NEW_TOKENS tokens
#   5. evaluation of the base and the trained policy: held-out prompts, EVAL_LIMIT StrongREJECT and XSTest prompts
#   6. one report (refusal and over-refusal before and after, alpha distributions, reward per category over steps)
# Outputs under OUT (default runs/main); every stage resumes or skips what is done, so a rerun continues. The stages
# are recipes/cpu_stages.sh; recipes/ablation_cpu.sh adds the GRPO / alpha^D / alpha^M runs on the same data.
set -euo pipefail
set -x

OUT=${OUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/runs/main}
source "$(dirname "${BASH_SOURCE[0]}")/cpu_stages.sh"
cd "$ROOT"
mkdir -p "$OUT/report"

build_data
train_reward_model
start_reward_server
evaluate_policy base "$SMOLLM2" "$OUT/eval/base"
train_policy both "$OUT/grpo_s"
evaluate_policy grpo_s "$OUT/grpo_s/policy" "$OUT/eval/grpo_s"

"$PYTHON" -m openrlhf_drirl.cli.evaluation_report \
   --run base="$OUT/eval/base" \
   --run grpo_s="$OUT/eval/grpo_s" \
   --reward_model_eval "$OUT/category_rm/eval_accuracy.json" \
   --output_dir "$OUT/report" | tee "$OUT/report/headline.txt"
"$PYTHON" -m openrlhf_drirl.cli.training_report \
   --run grpo_s="$OUT/grpo_s/policy/rollout_samples.jsonl" \
   --output_dir "$OUT/report" \
   --append_to "$OUT/report/report.md"
set +x
sed '/^wrote /d' "$OUT/report/headline.txt"
echo "main_cpu.sh: report $OUT/report/report.md"

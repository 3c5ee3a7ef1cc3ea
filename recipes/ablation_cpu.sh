#!/usr/bin/env bash
# The GRPO-S ablation on a CPU with the embedded SmolLM2-135M-Instruct: GRPO (no scaling), alpha^D only,
# alpha^M only and GRPO-S (alpha^D x alpha^M), on the main job's data and reward model, with the same prompts, seed
# and step budget, each evaluated like the base policy; one comparison report.
# Runs recipes/main_cpu.sh's stages first (skipped where OUT already has them: run it after main_cpu.sh with the same
# OUT to reuse its data, reward model, base evaluation and GRPO-S run). Outputs under OUT (default runs/main):
# OUT/ablation/<mode>/ (policy, checkpoints, rollout log), OUT/eval/<mode>/, OUT/ablation_report/report.md.
set -euo pipefail
set -x

OUT=${OUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/runs/main}
source "$(dirname "${BASH_SOURCE[0]}")/cpu_stages.sh"
cd "$ROOT"
mkdir -p "$OUT/ablation_report"

build_data
train_reward_model
start_reward_server
evaluate_policy base "$SMOLLM2" "$OUT/eval/base"
train_policy both "$OUT/grpo_s"   # the main job's run: resumed, or skipped when it is finished
evaluate_policy grpo_s "$OUT/grpo_s/policy" "$OUT/eval/grpo_s"
for mode in none data model; do
   name=$(case $mode in none) echo grpo;; data) echo alpha_D_only;; model) echo alpha_M_only;; esac)
   train_policy "$mode" "$OUT/ablation/$name"
   evaluate_policy "$name" "$OUT/ablation/$name/policy" "$OUT/eval/$name"
done

"$PYTHON" -m openrlhf_drirl.cli.evaluation_report \
   --run base="$OUT/eval/base" \
   --run grpo="$OUT/eval/grpo" \
   --run alpha_D_only="$OUT/eval/alpha_D_only" \
   --run alpha_M_only="$OUT/eval/alpha_M_only" \
   --run grpo_s="$OUT/eval/grpo_s" \
   --output_dir "$OUT/ablation_report" | tee "$OUT/ablation_report/headline.txt"
"$PYTHON" -m openrlhf_drirl.cli.training_report \
   --run grpo="$OUT/ablation/grpo/policy/rollout_samples.jsonl" \
   --run alpha_D_only="$OUT/ablation/alpha_D_only/policy/rollout_samples.jsonl" \
   --run alpha_M_only="$OUT/ablation/alpha_M_only/policy/rollout_samples.jsonl" \
   --run grpo_s="$OUT/grpo_s/policy/rollout_samples.jsonl" \
   --output_dir "$OUT/ablation_report" \
   --append_to "$OUT/ablation_report/report.md"
set +x
sed '/^wrote /d' "$OUT/ablation_report/headline.txt"
echo "ablation_cpu.sh: report $OUT/ablation_report/report.md"

#!/usr/bin/env bash
# The GRPO-S ablation on a CPU with the embedded SmolLM2-135M-Instruct: GRPO (no scaling), alpha^D only, alpha^M only,
# GRPO-S (alpha^D x alpha^M), GRPO-S sharpened (--drirl.alpha_exponent $SHARPEN_EXPONENT, not in the paper) and a
# negative control (grpo_shuffled_control: GRPO's advantages permuted within each group), each for every policy seed
# in SEEDS, on the main job's data, reward model and prompts with the same step budget; each run
# is evaluated like the base policy, and OpenRLHF's --eval.* path scores the held-out prompts greedily at step 0 and
# after every step (the step at which refusal passes the midpoint). One comparison report.
# Runs recipes/main_cpu.sh's data, reward-model and base-evaluation stages first (skipped where OUT already has them:
# run it after main_cpu.sh with the same OUT to reuse them). Outputs under OUT (default runs/main):
# OUT/ablation/<variant>_seed<seed>/ (policy, rollout and evaluation logs), OUT/eval/<variant>_seed<seed>/,
# OUT/ablation_report/report.md. On 2 cores about 6.4 minutes a run: 86 minutes at the defaults (12 runs) from
# nothing, 77 after the main job; the four variants of the paper's ablation (VARIANTS="grpo_s grpo alpha_D_only
# alpha_M_only") about 60 (README, "The ablation on a CPU"). A rerun skips the finished runs.
set -euo pipefail
set -x

OUT=${OUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/runs/main}
SEEDS=${SEEDS:-"42 43"}                 # policy seeds; data and reward model keep SEED
SHARPEN_EXPONENT=${SHARPEN_EXPONENT:-10} # alpha -> alpha^p: the sigmoid ratios keep alpha within ~20% of 1 here
# In this order (an interrupted run has whole variants, most telling first).
VARIANTS=${VARIANTS:-"grpo_s grpo shuffled_control alpha_D_only alpha_M_only grpo_s_sharp"}
for variant in $VARIANTS; do   # before any stage
   case $variant in grpo_s|grpo|shuffled_control|alpha_D_only|alpha_M_only|grpo_s_sharp) ;;
      *) echo "ablation_cpu.sh: VARIANTS has $variant: use grpo_s grpo shuffled_control alpha_D_only alpha_M_only" \
         "grpo_s_sharp" >&2; exit 2;; esac
done
source "$(dirname "${BASH_SOURCE[0]}")/cpu_stages.sh"
cd "$ROOT"
mkdir -p "$OUT/ablation_report"

build_data
train_reward_model
start_reward_server
evaluate_policy base "$SMOLLM2" "$OUT/eval/base"
# The trained runs: the harmful prompts of the main job's headline (held-out + StrongREJECT, 80 paired items at the
# defaults) and the refusal judge only, which halves each evaluation; the base evaluation above has them all.
EVAL_BENCHMARKS=${ABLATION_BENCHMARKS:-heldout,strongreject}
EVAL_JUDGES=refusal
# Held-out refusal per step; one checkpoint per run kept (each holds the optimizer state: 1.5 GB with SmolLM2), and no
# "best" one (OpenRLHF would track the evaluation reward).
per_run=(--eval.dataset "$DATA_DIR/prompts.heldout.jsonl" --eval.steps 1 --eval.temperature 0
   --eval.n_samples_per_prompt 1 --ckpt.max_num 1 --ckpt.best_metric_key none)
eval_runs=(--run base="$OUT/eval/base")
rollout_logs=()
for variant in $VARIANTS; do
   mode=$(case $variant in grpo) echo none;; alpha_D_only) echo data;; alpha_M_only) echo model;;
      shuffled_control) echo shuffled_control;; *) echo both;; esac)
   extra=()
   [ "$variant" = grpo_s_sharp ] && extra=(--drirl.alpha_exponent "$SHARPEN_EXPONENT")
   for seed in $SEEDS; do
      run="${variant}_seed$seed"
      # Finished means evaluated, and then its checkpoint is gone (below); otherwise train or resume.
      if [ -d "$OUT/ablation/$run/ckpt" ] || [ ! -f "$OUT/eval/$run/manifest.json" ]; then
         POLICY_SEED=$seed train_policy "$mode" "$OUT/ablation/$run" "${per_run[@]}" "${extra[@]}"
         evaluate_policy "$run" "$OUT/ablation/$run/policy" "$OUT/eval/$run"
         # 1.6 GB of optimizer state a run; policy/ keeps what the evaluation and the training report read.
         rm -rf "$OUT/ablation/$run/ckpt"
      else
         echo "ablation_cpu.sh: $run is trained and evaluated; kept (delete $OUT/eval/$run to rerun it)"
      fi
      eval_runs+=(--run "$run=$OUT/eval/$run")
      rollout_logs+=(--run "$run=$OUT/ablation/$run/policy/rollout_samples.jsonl"
         --eval_run "$run=$OUT/ablation/$run/policy/eval_samples.jsonl")
   done
done

"$PYTHON" -m openrlhf_drirl.cli.evaluation_report "${eval_runs[@]}" --output_dir "$OUT/ablation_report" \
   | tee "$OUT/ablation_report/headline.txt"
"$PYTHON" -m openrlhf_drirl.cli.training_report "${rollout_logs[@]}" --output_dir "$OUT/ablation_report" \
   --append_to "$OUT/ablation_report/report.md"
set +x
sed '/^wrote /d' "$OUT/ablation_report/headline.txt"
echo "ablation_cpu.sh: report $OUT/ablation_report/report.md"

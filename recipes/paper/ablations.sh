#!/usr/bin/env bash
# The paper's ablations, each one run of recipes/paper/run_experiment.sh with the same data, base policy, training
# flags (recipes/train_grpo_s.sh: steps, batch sizes, learning rate, KL) and seed; only the named setting changes:
#   grpo_s      GRPO-S, alpha = alpha^D * alpha^M, 7 reward models (layout (b), the paper's setup)
#   grpo        plain GRPO advantages (--drirl.hardness_terms none; the same drirl/* metrics are logged)
#   alpha_d     alpha^D only (--drirl.hardness_terms data)
#   alpha_m     alpha^M only (--drirl.hardness_terms model)
#   grpo_s_rm1  GRPO-S with one reward model: layout (a), one backbone with 7 heads, loaded once per server
# then python -m openrlhf_drirl.cli.evaluation_report over all runs -> OUT/report.
# Needs: OUT/data (recipes/paper/build_dataset.sh) and OUT/category_rm/{per_category,multi_head}
# (LAYOUT=both recipes/paper/train_category_rms.sh). Writes OUT/runs/<run>[_seed<S>]/ and OUT/report/.
# RUNS picks a subset; SEEDS="42 43 44" repeats each run per seed (run names then end in _seed<S>). Runs that finished
# are skipped (their RUN_DIR/eval/metrics.json exists); a killed run resumes from its checkpoint. Arguments after the
# script name go to every training run (e.g. --logger.wandb.key KEY).
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/runs/paper}
RM7=${RM7:-$OUT/category_rm/per_category}
RM1=${RM1:-$OUT/category_rm/multi_head}
RUNS=${RUNS:-grpo_s grpo alpha_d alpha_m grpo_s_rm1}
SEEDS=${SEEDS:-42}

read -r -a RUN_LIST <<< "$RUNS"
read -r -a SEED_LIST <<< "$SEEDS"
REPORT_RUNS=()
for seed in "${SEED_LIST[@]}"; do
   for run in "${RUN_LIST[@]}"; do
      case "$run" in
         grpo_s) terms=both rm=$RM7 ;;
         grpo) terms=none rm=$RM7 ;;
         alpha_d) terms=data rm=$RM7 ;;
         alpha_m) terms=model rm=$RM7 ;;
         grpo_s_rm1) terms=both rm=$RM1 ;;
         *) echo "ablations.sh: unknown run '$run' in RUNS: use grpo_s grpo alpha_d alpha_m grpo_s_rm1" >&2; exit 2 ;;
      esac
      name=$run
      if [ "${#SEED_LIST[@]}" -gt 1 ]; then name=${run}_seed$seed; fi
      if [ ! -f "$OUT/runs/$name/eval/metrics.json" ]; then
         # RM_GPUS unset: run_experiment.sh picks the servers' GPUs for the layout it finds in RM_PATH.
         OUT="$OUT" RUN_NAME="$name" RUN_DIR="$OUT/runs/$name" RM_PATH="$rm" HARDNESS_TERMS="$terms" SEED="$seed" \
            PYTHON="$PYTHON" bash "$ROOT/recipes/paper/run_experiment.sh" "$@"
      fi
      REPORT_RUNS+=(--run "$name=$OUT/runs/$name/eval")
   done
done

"$PYTHON" -m openrlhf_drirl.cli.evaluation_report "${REPORT_RUNS[@]}" --output_dir "$OUT/report"

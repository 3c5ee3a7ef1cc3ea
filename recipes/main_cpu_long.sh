#!/usr/bin/env bash
# The main job at a longer budget (README, "The longer main job"): main_cpu.sh with two IRL negatives per prompt,
# none of them a refusal (IRL_NEGATIVES=compliant), the reward model trained on the demonstration's answer alone at a
# higher learning rate, and 12 GRPO-S steps instead of 6. About 26 minutes on 2 cores. Measured: +48.8 points of
# harmful-prompt refusal at policy seed 42, +12.5 at 43, -11.2 at 44. Outputs under OUT (default runs/main_long);
# any variable of recipes/cpu_stages.sh can still be set.
set -euo pipefail

export OUT=${OUT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/runs/main_long}
export IRL_SAMPLES=${IRL_SAMPLES:-2} IRL_NEGATIVES=${IRL_NEGATIVES:-compliant}
export RM_CHOSEN=${RM_CHOSEN:-chosen_answer} RM_LR=${RM_LR:-1e-4} RM_EPOCHS=${RM_EPOCHS:-3}
export POLICY_EPISODES=${POLICY_EPISODES:-4}
exec bash "$(dirname "${BASH_SOURCE[0]}")/main_cpu.sh"

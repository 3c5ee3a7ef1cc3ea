#!/usr/bin/env bash
# The evaluation alone on a CPU: one policy (default: the embedded SmolLM2-135M-Instruct) on every bundled set, at a
# --limit preset for 2 cores: the safety sets (StrongREJECT, HarmBench, XSTest), the usefulness sets (HHH,
# TruthfulQA, BBQ-lite, elementary math, the GSM-style set) and the offline jailbreaks on the StrongREJECT slice,
# judged by the refusal rules; then the report (Table 1 layout, per-attack refusal, worst case per prompt).
# LIMIT prompts per set (seeded slices; XSTest keeps its safe:unsafe mix); JAILBREAKS as evaluate's --jailbreaks.
# Outputs under OUT; a rerun resumes. Add --judge strongreject flags by hand where an LLM endpoint is reachable.
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
OUT=${OUT:-$ROOT/runs/evaluate_cpu}
LIMIT=${LIMIT:-8}
# The preset leaves out the long role-play templates (aim, autodan_template: ~700 prompt tokens each) to fit 2 cores.
JAILBREAKS=${JAILBREAKS:-none,base64,rot13,prefix_injection,refusal_suppression,style_injection_json,gcg_transfer,dra}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SMOLLM2=$("$PYTHON" -c 'from openrlhf_drirl.embedded_model import smollm2_path; print(smollm2_path())')
POLICY=${POLICY:-base=$SMOLLM2}
cd "$ROOT"

"$PYTHON" -m openrlhf_drirl.cli.evaluate \
   --policy "$POLICY" \
   --benchmarks strongreject,harmbench,xstest,hhh,truthfulqa,bbq,math,gsm \
   --limit "$LIMIT" \
   --jailbreaks "$JAILBREAKS" \
   --jailbreak_variants 2 \
   --max_new_tokens "$MAX_NEW_TOKENS" \
   --temperature 0 \
   --batch_size 32 \
   --seed 0 \
   --judge refusal \
   --output_dir "$OUT/eval"
"$PYTHON" -m openrlhf_drirl.cli.evaluation_report \
   --run "${POLICY%%=*}=$OUT/eval" \
   --output_dir "$OUT/report"

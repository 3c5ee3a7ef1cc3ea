#!/usr/bin/env bash
# What one GPU can check, for the day one is lent: at most 8 minutes on one H100/H200, no vLLM, no Ray, no network.
# Sections, each with its seconds and ratios measured in this run (bench/README.md, "One GPU check"):
#   reward_side   bench_reward_side.py: an 8B-shaped Llama reward model (Llama-3.1-8B's shape, all 32 layers, bf16,
#                 forward only) with the ViT-L-14 text tower, both random weights; similarity cost and length sorting
#   ppo_bf16/fp32 bench_grpo_step_vs_trl.py (ours only): train_ppo_local steps of a ~1B Llama from a config
#   irl_batched/one_by_one  train_category_rm: the IRL trainer on the same backbone, micro-batch 14 vs 1
# Without a GPU (or DEVICE=cpu) the same sections run at tiny shapes (~2-3 min on 2 cores): tests/test_gpu_check.py.
# Outputs under WORK (default: a new temporary folder): one log per section, seconds.tsv, the summary table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${WORK:-$(mktemp -d -t gpu_check.XXXXXX)}
DEVICE=${DEVICE:-auto}                    # auto: cuda when torch sees one, else cpu
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$ROOT"
mkdir -p "$WORK"
: > "$WORK/seconds.tsv"

if [ "$DEVICE" = auto ]; then
   DEVICE=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
fi
if [ "$DEVICE" = cuda ]; then
   BUDGET=480
   SECTION_TIMEOUT=300
   POLICY_SHAPE=(--hidden 2048 --layers 16 --intermediate 8192 --heads 32 --kv_heads 8)   # Llama-3.2-1B's
   REWARD_SHAPE=(--prompts 16 --samples 8 --rounds 2)    # 128 responses + 16 demonstrations; 8B shape built in
   PPO_SHAPE=(--prompts_per_step 8 --n 4 --max_new_tokens 64 --micro_batch_size 8 --steps 2)
   IRL_LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 1)   # DeepSpeed wants a launcher
else
   export CUDA_VISIBLE_DEVICES=""         # DEVICE=cpu on a GPU machine: every subprocess on CPU
   BUDGET=240                            # mostly the start-up of 6 Python processes (torch, OpenRLHF, DeepSpeed)
   SECTION_TIMEOUT=120
   POLICY_SHAPE=(--hidden 64 --layers 2 --intermediate 128 --heads 1 --kv_heads 1)
   REWARD_SHAPE=(--prompts 2 --samples 2 --rounds 1 --batch_size 4 --cpu_hidden 64 --cpu_layers 1)
   PPO_SHAPE=(--prompts_per_step 2 --n 2 --max_new_tokens 8 --micro_batch_size 4 --steps 1)
   IRL_LAUNCH=("$PYTHON")
fi
echo "gpu_check on $DEVICE, work folder $WORK"

# section NAME COMMAND...: runs COMMAND with its output in WORK/NAME.log, appends "NAME seconds" to seconds.tsv.
section() {
   local name=$1 start end
   shift
   start=$(date +%s.%N)
   if ! timeout "$SECTION_TIMEOUT" "$@" > "$WORK/$name.log" 2>&1; then
      tail -n 40 "$WORK/$name.log"
      echo "gpu_check: section $name failed (log: $WORK/$name.log)" >&2
      exit 1
   fi
   end=$(date +%s.%N)
   echo "$name $(awk "BEGIN { print $end - $start }")" | tee -a "$WORK/seconds.tsv"
}

section prepare "$PYTHON" bench/gpu_check.py prepare "$WORK" "${POLICY_SHAPE[@]}"
section reward_side "$PYTHON" bench/bench_reward_side.py --device "$DEVICE" "${REWARD_SHAPE[@]}"
for dtype in bf16 fp32; do
   section "ppo_$dtype" "$PYTHON" bench/bench_grpo_step_vs_trl.py \
      --frameworks ours \
      --model "$WORK/policy" \
      "${PPO_SHAPE[@]}" \
      --warmup 1 \
      --workdir "$WORK/ppo_$dtype" \
      --ours_flags="--ds.param_dtype $dtype"
done
for run in batched:14 one_by_one:1; do   # name:micro-batch size, same 14 pairs per step
   name=irl_${run%:*}
   section "$name" "${IRL_LAUNCH[@]}" -m openrlhf_drirl.cli.train_category_rm \
      --model.model_name_or_path "$WORK/policy" \
      --data.dataset "$WORK/irl_pairs.train.jsonl" \
      --eval.dataset "$WORK/irl_pairs.eval.jsonl" \
      --data.max_len 512 \
      --train.batch_size 14 \
      --train.micro_batch_size "${run#*:}" \
      --train.max_epochs 1 \
      --lr_warmup_ratio 0 \
      --ckpt.output_dir "$WORK/$name/model" \
      --ckpt.path "$WORK/$name/ckpt" \
      --logger.tensorboard_dir "$WORK/$name/tb"
done

"$PYTHON" bench/gpu_check.py summary "$WORK" \
   --budget "$BUDGET" \
   --sections prepare,reward_side,ppo_bf16,ppo_fp32,irl_batched,irl_one_by_one

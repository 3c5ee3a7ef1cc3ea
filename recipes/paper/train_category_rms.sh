#!/usr/bin/env bash
# Paper scale, stage 2: category reward models by IRL on one 8-GPU node (DeepSpeed ZeRO-3, bf16), in either layout:
#   LAYOUT=multi_head    one backbone + 7 heads, trained on all pairs     -> RM_DIR/multi_head   ("one model")
#   LAYOUT=per_category  the paper's 7 separate models: the pairs split by category, one model trained per category
#                        (one after another, each on all GPUs), assembled behind router.json -> RM_DIR/per_category
#   LAYOUT=both          both of the above (the 1-vs-7 ablation needs both)
# Needs DATA_DIR/irl_pairs.{train,heldout}.jsonl from recipes/paper/build_dataset.sh. Writes each model with its
# eval_accuracy.json/png (held-out pairwise accuracy per category); TensorBoard logs under RM_DIR/tensorboard.
# Rerunning resumes every training from its last checkpoint (--ckpt.load_enable) and skips a finished assembly.
# Budget: the same epochs, learning rate and pairs per category per step for both layouts: the multi-head model takes
# 112 pairs per step (16 per category), each separate model 16 pairs of its category. 8 GPUs x micro batch 2 must
# divide both (DeepSpeed), hence 112 = 7 x 16. Learning rate 3e-6 for one epoch follows Li et al.'s reference code,
# not a value the paper states (docs/method.md, decision 21).
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
DEEPSPEED=${DEEPSPEED:-deepspeed}
LAYOUT=${LAYOUT:-both}
MODEL_PATH=${MODEL_PATH:-meta-llama/Llama-3.1-8B-Instruct}
DATA_DIR=${DATA_DIR:-$ROOT/runs/paper/data}
RM_DIR=${RM_DIR:-$ROOT/runs/paper/category_rm}
SEVEN="insult unfairness_and_discrimination crimes_and_illegal_activities physical_harm mental_health"
SEVEN+=" privacy_and_property ethics_and_morality"
CATEGORIES=${CATEGORIES:-$SEVEN}             # space separated
PAIRS_PER_CATEGORY_PER_STEP=${PAIRS_PER_CATEGORY_PER_STEP:-16}
MICRO_BATCH=${MICRO_BATCH:-2}
EPOCHS=${EPOCHS:-1}
LR=${LR:-3e-6}
SEED=${SEED:-42}

read -r -a CATS <<< "$CATEGORIES"
CATEGORY_LIST=$(IFS=,; echo "${CATS[*]}")
COMMON=(
   --model.model_name_or_path "$MODEL_PATH"
   --data.prompt_key prompt
   --data.chosen_key chosen
   --data.rejected_key rejected
   --data.category_key category
   --data.apply_chat_template
   --data.max_len 2048
   --eval.steps 50
   --train.micro_batch_size "$MICRO_BATCH"
   --train.max_epochs "$EPOCHS"
   --train.seed "$SEED"
   --adam.lr "$LR"
   --lr_scheduler cosine_with_min_lr
   --lr_warmup_ratio 0.03
   --ds.zero_stage 3
   --ds.param_dtype bf16
   --ds.attn_implementation flash_attention_2
   --model.gradient_checkpointing_enable
   --ckpt.save_steps 100
   --ckpt.load_enable
   --logger.tensorboard_dir "$RM_DIR/tensorboard"
)

if [ "$LAYOUT" = multi_head ] || [ "$LAYOUT" = both ]; then
   "$DEEPSPEED" --module openrlhf_drirl.cli.train_category_rm "${COMMON[@]}" \
      --irl.categories "$CATEGORY_LIST" \
      --data.dataset "$DATA_DIR/irl_pairs.train.jsonl" \
      --eval.dataset "$DATA_DIR/irl_pairs.heldout.jsonl" \
      --train.batch_size "$((PAIRS_PER_CATEGORY_PER_STEP * ${#CATS[@]}))" \
      --ckpt.output_dir "$RM_DIR/multi_head" \
      --ckpt.path "$RM_DIR/multi_head/ckpt" \
      --logger.wandb.run_name category_rm_multi_head "$@"
fi

if [ "$LAYOUT" = per_category ] || [ "$LAYOUT" = both ]; then
   "$PYTHON" -m openrlhf_drirl.cli.assemble_category_rms split_pairs \
      --pairs "$DATA_DIR/irl_pairs.train.jsonl" "$DATA_DIR/irl_pairs.heldout.jsonl" \
      --categories "$CATEGORY_LIST" \
      --output_dir "$RM_DIR/pairs"
   SOURCES=()
   for category in "${CATS[@]}"; do
      "$DEEPSPEED" --module openrlhf_drirl.cli.train_category_rm "${COMMON[@]}" \
         --irl.categories "$category" \
         --data.dataset "$RM_DIR/pairs/$category/irl_pairs.train.jsonl" \
         --eval.dataset "$RM_DIR/pairs/$category/irl_pairs.heldout.jsonl" \
         --train.batch_size "$PAIRS_PER_CATEGORY_PER_STEP" \
         --ckpt.output_dir "$RM_DIR/models/$category" \
         --ckpt.path "$RM_DIR/models/$category/ckpt" \
         --logger.wandb.run_name "category_rm_$category" "$@"
      SOURCES+=("$category=$RM_DIR/models/$category")
   done
   if [ ! -f "$RM_DIR/per_category/router.json" ]; then
      rm -rf "$RM_DIR/per_category"   # an assembly killed half way; the trained models are untouched
      "$PYTHON" -m openrlhf_drirl.cli.assemble_category_rms assemble \
         --categories "$CATEGORY_LIST" \
         --category "${SOURCES[@]}" \
         --output_dir "$RM_DIR/per_category"
   fi
fi

#!/usr/bin/env bash
# DR-IRL stage 2: category reward model by inverse RL (one Llama-3.1-8B backbone + 7 category heads), one 8-GPU node.
# Data: irl_pairs.jsonl from data_tools (chosen = CoD demonstration, rejected = base-policy sample).
# Writes the model, eval_accuracy.json and eval_accuracy.png (held-out pairwise accuracy per category) to SAVE_PATH.
# Rerunning the same command resumes from the last checkpoint (--ckpt.load_enable).
# Held-out loss and pairwise accuracy per category every --eval.steps and at the end; logs to TensorBoard under
# TB_DIR (or pass --logger.wandb.key ... for wandb). Without a GPU, run the module with python (one CPU rank) or
# torchrun instead of deepspeed: the same DeepspeedStrategy on CPU ranks, fp32, gloo (see recipes/smoke_cpu.sh).
# ML-IRL outer loop: add --irl.refresh_rounds 1 --irl.policy_path <current actor> to retrain on fresh policy samples.
# The paper's seven separate models, and both layouts with one budget: recipes/paper/train_category_rms.sh.
set -euo pipefail
set -x

MODEL_PATH=${MODEL_PATH:-meta-llama/Llama-3.1-8B-Instruct}
DATASET_PATH=${DATASET_PATH:-./runs/data/irl_pairs.train.jsonl}
SAVE_PATH=${SAVE_PATH:-./runs/category_rm}
TB_DIR=${TB_DIR:-./runs/tensorboard}

deepspeed --module openrlhf_drirl.cli.train_category_rm \
   --model.model_name_or_path "${MODEL_PATH}" \
   --data.dataset "${DATASET_PATH}" \
   --data.prompt_key prompt \
   --data.chosen_key chosen \
   --data.rejected_key rejected \
   --data.category_key category \
   --data.apply_chat_template \
   --data.max_len 2048 \
   --eval.split_ratio 0.1 \
   --eval.steps 50 \
   --train.batch_size 128 \
   --train.micro_batch_size 4 \
   --train.max_epochs 1 \
   --adam.lr 3e-6 \
   --lr_scheduler cosine_with_min_lr \
   --lr_warmup_ratio 0.03 \
   --ds.zero_stage 3 \
   --ds.param_dtype bf16 \
   --ds.attn_implementation flash_attention_2 \
   --model.gradient_checkpointing_enable \
   --ckpt.output_dir "${SAVE_PATH}" \
   --ckpt.path "${SAVE_PATH}/ckpt" \
   --ckpt.save_steps 100 \
   --logger.tensorboard_dir "${TB_DIR}" \
   --logger.wandb.run_name category_rm \
   --ckpt.load_enable "$@"

#!/usr/bin/env bash
# DR-IRL stage 3: GRPO-S on GPUs 0-3 of one 8-GPU node by default (hybrid engine: vLLM, actor and reference share
# each GPU), paper scale (Llama-3.1-8B-Instruct policy); recipes/serve_category_rm.sh takes GPUs 4-7.
# Needs: prompts from recipes/build_dataset.sh and a category reward server from recipes/serve_category_rm.sh
# (it returns drirl_similarity and drirl_reward_gap in extra_logs). GRPO-S flags are the --drirl.* lines.
# Writes the policy (save_pretrained) to SAVE_PATH, OpenRLHF checkpoints to SAVE_PATH/ckpt (rerun to resume) and
# TensorBoard logs to SAVE_PATH/tensorboard. NUM_NODES x NUM_GPUS GPUs (start Ray on every node first when
# NUM_NODES > 1; a running Ray cluster uses its own GPUs, not CUDA_VISIBLE_DEVICES); REWARD_URL may be a comma list
# of servers; with the reward server on another machine, CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 gives the policy all 8.
# recipes/paper/run_experiment.sh drives this recipe with its reward servers and evaluation; HARDNESS_TERMS=none is
# plain GRPO (the ablations: recipes/paper/ablations.sh).
set -euo pipefail
set -x

MODEL_PATH=${MODEL_PATH:-meta-llama/Llama-3.1-8B-Instruct}
DATASET_PATH=${DATASET_PATH:-./runs/data/prompts.train.jsonl}
REWARD_URL=${REWARD_URL:-http://127.0.0.1:5000/get_reward}
SAVE_PATH=${SAVE_PATH:-./runs/grpo_s}
NUM_NODES=${NUM_NODES:-1}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3}   # the policy's GPUs; the reward server's are others
IFS=, read -r -a POLICY_DEVICES <<< "$CUDA_VISIBLE_DEVICES"
NUM_GPUS=${NUM_GPUS:-${#POLICY_DEVICES[@]}}   # per node; 4 (micro batch) x NUM_NODES x NUM_GPUS must divide 128
HARDNESS_TERMS=${HARDNESS_TERMS:-both}     # both | data | model | none
SEED=${SEED:-42}

python3 -m openrlhf_drirl.cli.train_ppo_ray \
   --ref.num_nodes "${NUM_NODES}" \
   --ref.num_gpus_per_node "${NUM_GPUS}" \
   --actor.num_nodes "${NUM_NODES}" \
   --actor.num_gpus_per_node "${NUM_GPUS}" \
   --vllm.num_engines "$((NUM_NODES * NUM_GPUS))" \
   --vllm.tensor_parallel_size 1 \
   --vllm.gpu_memory_utilization 0.6 \
   --vllm.enable_sleep \
   --ds.enable_sleep \
   --train.colocate_all \
   --actor.model_name_or_path "${MODEL_PATH}" \
   --reward.remote_url "${REWARD_URL}" \
   --ckpt.output_dir "${SAVE_PATH}" \
   --ckpt.path "${SAVE_PATH}/ckpt" \
   --ckpt.save_steps 20 \
   --ckpt.save_hf \
   --ckpt.load_enable \
   --train.micro_batch_size 4 \
   --train.batch_size 128 \
   --rollout.micro_batch_size 8 \
   --rollout.batch_size 128 \
   --rollout.n_samples_per_prompt 8 \
   --rollout.max_new_tokens 512 \
   --rollout.temperature 1.0 \
   --data.max_len 1024 \
   --train.max_epochs 1 \
   --train.num_episodes 1 \
   --train.seed "${SEED}" \
   --ds.zero_stage 3 \
   --ds.param_dtype bf16 \
   --actor.adam.lr 1e-6 \
   --actor.eps_clip 0.2 \
   --algo.kl.init_coef 0.04 \
   --algo.kl.use_loss \
   --algo.kl.estimator k3 \
   --algo.advantage.estimator grpo_s \
   --drirl.hardness_terms "${HARDNESS_TERMS}" \
   --drirl.reference batch \
   --drirl.outlier_k 1.5 \
   --data.prompt_dataset "${DATASET_PATH}" \
   --data.input_key prompt \
   --data.label_key label \
   --data.apply_chat_template \
   --actor.gradient_checkpointing_enable \
   --logger.tensorboard_dir "${SAVE_PATH}/tensorboard" "$@"

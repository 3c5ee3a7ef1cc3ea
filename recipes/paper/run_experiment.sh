#!/usr/bin/env bash
# One paper experiment, end to end: start the category reward server(s), wait for /health, train the policy with
# GRPO-S (recipes/train_grpo_s.sh through OpenRLHF's Ray launcher), evaluate base vs trained
# (recipes/paper/evaluate.sh) while the servers are still up, and stop the servers on exit (also on error or Ctrl-C).
# Needs: DATA_DIR from recipes/paper/build_dataset.sh, RM_PATH from recipes/paper/train_category_rms.sh (layout (a)
# RM_DIR/multi_head, or layout (b) RM_DIR/per_category: router.json), one node with 8 GPUs by default.
# Writes RUN_DIR/model (the policy), RUN_DIR/ckpt (rerun to resume), RUN_DIR/tensorboard, RUN_DIR/eval (metrics.json)
# and RUN_DIR/logs/reward_server_<i>.log.
#
# GPUs on one node: the policy (actor, reference, vLLM, colocated) on POLICY_GPUS, the reward servers on RM_GPUS,
# one server per space-separated group ("4 5 6 7": four servers with one GPU each; "4,5 6,7": two servers with two
# GPUs each). Their URLs go to --reward.remote_url as a comma list, over which OpenRLHF spreads the requests, so
# every server serves every category. Layout (a) of an 8B backbone is 14.0 GB of bf16 weights (one GPU per server);
# layout (b) is 97.9 GB, more than one 80 GB GPU: give each server two GPUs and the server's multi-GPU placement flag
# through RM_SERVER_ARGS (see python -m openrlhf_drirl.cli.serve_category_rm --help), or serve it elsewhere.
# Several nodes, or servers elsewhere: start Ray on every node (ray start --head / ray start --address=HEAD:6379),
# set NUM_NODES, and either start the servers here with RM_BIND=0.0.0.0 RM_HOST=<this node's address reachable from
# every node>, or start them yourself and pass REWARD_URLS (comma list; then none is started here). A running Ray
# cluster uses its own GPUs, not POLICY_GPUS: keep the reward servers off them.
set -euo pipefail
set -x

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$ROOT/runs/paper}
RUN_NAME=${RUN_NAME:-grpo_s}
RUN_DIR=${RUN_DIR:-$OUT/runs/$RUN_NAME}
DATA_DIR=${DATA_DIR:-$OUT/data}
RM_PATH=${RM_PATH:-$OUT/category_rm/per_category}
POLICY_MODEL=${POLICY_MODEL:-meta-llama/Llama-3.1-8B-Instruct}
HARDNESS_TERMS=${HARDNESS_TERMS:-both}     # both (GRPO-S) | data (alpha^D only) | model (alpha^M only) | none (GRPO)
SEED=${SEED:-42}
NUM_NODES=${NUM_NODES:-1}
POLICY_GPUS=${POLICY_GPUS:-0,1,2,3}        # 4 (micro batch) x NUM_NODES x GPUs per node must divide 128
RM_GPUS=${RM_GPUS:-}                       # default: "4,5 6,7" for layout (b), "4 5 6 7" for layout (a)
RM_PORT=${RM_PORT:-5000}                   # first server's port; the next ones count up
RM_BIND=${RM_BIND:-127.0.0.1}              # 0.0.0.0 to serve other nodes
RM_HOST=${RM_HOST:-127.0.0.1}              # the address the rollout workers use
RM_SERVER_ARGS=${RM_SERVER_ARGS:-}         # extra serve_category_rm flags, e.g. multi-GPU placement
REWARD_URLS=${REWARD_URLS:-}               # servers started elsewhere: http://h1:5000/get_reward,http://h2:5000/...
SERVER_WAIT_S=${SERVER_WAIT_S:-1800}       # loading layout (b) of an 8B backbone takes minutes
EVALUATE=${EVALUATE:-1}                    # 0: train only
EVAL_POLICIES=${EVAL_POLICIES:-base=$POLICY_MODEL $RUN_NAME=$RUN_DIR/model}

fail() { echo "run_experiment.sh: error: $*" >&2; exit 2; }
IFS=, read -r -a POLICY_DEVICES <<< "$POLICY_GPUS"
if [ $((128 % (4 * NUM_NODES * ${#POLICY_DEVICES[@]}))) -ne 0 ]; then
   fail "POLICY_GPUS=$POLICY_GPUS, NUM_NODES=$NUM_NODES: 4 x nodes x GPUs per node must divide the train batch" \
      "of 128: use 1, 2, 4 or 8 GPUs per node"
fi
if [ ! -f "$DATA_DIR/prompts.train.jsonl" ]; then
   fail "DATA_DIR=$DATA_DIR has no prompts.train.jsonl: run recipes/paper/build_dataset.sh"
fi
if [ -z "$REWARD_URLS" ] && [ ! -d "$RM_PATH" ]; then
   fail "RM_PATH=$RM_PATH does not exist: run recipes/paper/train_category_rms.sh, or pass REWARD_URLS"
fi
read -r -a GROUPS_OF_GPUS <<< "${RM_GPUS:-$([ -f "$RM_PATH/router.json" ] && echo "4,5 6,7" || echo "4 5 6 7")}"
read -r -a SERVER_ARGS <<< "$RM_SERVER_ARGS"
mkdir -p "$RUN_DIR/logs"

SERVER_PIDS=()
stop_servers() {
   for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
   for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_servers EXIT

wait_for_health() {  # PORT PID: tools/wait_for_server.py gives up after 300 s, so ask again up to SERVER_WAIT_S
   local waited=0
   until "$PYTHON" "$ROOT/tools/wait_for_server.py" "$1" "$2"; do
      kill -0 "$2" 2>/dev/null || { echo "reward server on port $1 exited: see $RUN_DIR/logs" >&2; exit 1; }
      waited=$((waited + 300))
      if [ "$waited" -ge "$SERVER_WAIT_S" ]; then echo "reward server on port $1 not up" >&2; exit 1; fi
   done
}

if [ -z "$REWARD_URLS" ]; then
   URLS=()
   port=$RM_PORT
   for i in "${!GROUPS_OF_GPUS[@]}"; do
      # recipes/serve_category_rm.sh holds the server's settings; it execs the server, so its pid is the server's.
      CUDA_VISIBLE_DEVICES="${GROUPS_OF_GPUS[$i]}" PYTHON="$PYTHON" RM_PATH="$RM_PATH" HOST="$RM_BIND" PORT="$port" \
         bash "$ROOT/recipes/serve_category_rm.sh" "${SERVER_ARGS[@]}" > "$RUN_DIR/logs/reward_server_$i.log" 2>&1 &
      SERVER_PIDS+=($!)
      URLS+=("http://$RM_HOST:$port/get_reward")
      port=$((port + 1))
   done
   for i in "${!SERVER_PIDS[@]}"; do wait_for_health "$((RM_PORT + i))" "${SERVER_PIDS[$i]}"; done
   REWARD_URLS=$(IFS=,; echo "${URLS[*]}")
else
   "$PYTHON" -c 'import sys, time, urllib.request
for url in sys.argv[2].split(","):
    health, deadline = url.rsplit("/", 1)[0] + "/health", time.time() + float(sys.argv[1])
    while True:
        try:
            urllib.request.urlopen(health, timeout=5)
            break
        except OSError as e:
            if time.time() > deadline:
                sys.exit(f"reward server {health} not up: {e}")
            time.sleep(5)' "$SERVER_WAIT_S" "$REWARD_URLS"
fi

# The same training for every run of the ablations: only HARDNESS_TERMS, RM_PATH (the servers) and SEED change.
CUDA_VISIBLE_DEVICES="$POLICY_GPUS" MODEL_PATH="$POLICY_MODEL" \
   DATASET_PATH="$DATA_DIR/prompts.train.jsonl" REWARD_URL="$REWARD_URLS" SAVE_PATH="$RUN_DIR" \
   NUM_NODES="$NUM_NODES" NUM_GPUS="${#POLICY_DEVICES[@]}" HARDNESS_TERMS="$HARDNESS_TERMS" SEED="$SEED" \
   bash "$ROOT/recipes/train_grpo_s.sh" \
      --ckpt.output_dir "$RUN_DIR/model" \
      --eval.dataset "$DATA_DIR/prompts.heldout.jsonl" \
      --eval.steps 10 \
      --logger.wandb.run_name "$RUN_NAME" "$@"

if [ "$EVALUATE" = 1 ]; then
   CUDA_VISIBLE_DEVICES="${POLICY_DEVICES[0]}" PYTHON="$PYTHON" POLICIES="$EVAL_POLICIES" DATA_DIR="$DATA_DIR" \
      EVAL_DIR="$RUN_DIR/eval" REWARD_URL="${REWARD_URLS%%,*}" SEED="$SEED" \
      bash "$ROOT/recipes/paper/evaluate.sh"
fi

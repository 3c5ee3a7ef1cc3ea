"""Seconds per GRPO step: ours (``train_ppo_local --algo.advantage.estimator grpo_s``) vs TRL's ``GRPOTrainer``.

Both train the embedded SmolLM2-135M-Instruct (``openrlhf_drirl.embedded_model.smollm2_path()``) in fp32 on CPU, one
after the other in fresh subprocesses of this one invocation (the ratio comes from one run, on one machine state):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_grpo_step_vs_trl.py [--prompts_per_step 8] [--n 4]
        [--max_new_tokens 48] [--steps 2] [--warmup 1] [--micro_batch_size 8] [--generate_batch_size 0]
        [--threads 2] [--rounds 1] [--frameworks ours,trl] [--workdir DIR]
        [--gradient_checkpointing] [--lora_rank 0] [--ours_flags="--local.generate_batch_size 16"]

Needs TRL (tested with trl==1.16.0, installed with ``pip install --no-deps trl==1.16.0``: every dependency it lists is
already in the CPU venv). About 6 minutes on 2 idle cores with the defaults (each run: ~15 s start-up, 3 steps of
~50 s, saving). Prints one progress line per finished step, then a table; per framework, the means over the
``--steps`` steps after ``--warmup`` warm-up steps (of every round) of:

    s/step      wall seconds from one step's end to the next (what a user waits); the ratio and the target use it
    CPU s       CPU seconds of the process in that time, all threads: less sensitive to other jobs on the machine
    CPU wait    share of the wall time in which the machine had runnable tasks waiting for a CPU (Linux PSI): when
                it is high, other jobs competed and the wall times are noise
    generation, experience (of it: old logp, ref logp), train, other   the parts, as described below
    resp tok, reward   mean response length (tokens) and reward: sampling differs, so these differ a little

then each timed step's s/step, whether both scored the same prompts in each step, and the ratio ours / TRL of
s/step (against the target <= 1.0) and of CPU s. ``--rounds 2`` runs ours, TRL, TRL, ours (alternating order) and
pools the steps, for a busy machine. Each subprocess's own output (OpenRLHF's INFO lines, TRL's logs, progress bars)
goes to ``<workdir>/round<k>/<name>.log``.

What is the same for both (defaults in brackets):
- model, dtype and attention: the SmolLM2 folder, fp32, sdpa; no gradient checkpointing unless asked for both
  (TRL's GRPOConfig defaults to gradient checkpointing and bf16: both are turned off);
- prompts: the first (warmup + steps) x prompts_per_step prompts of ``data_tools/bundled/eval/strongreject.jsonl``,
  each as one user turn under the tokenizer's chat template (OpenRLHF ``--data.apply_chat_template``; TRL's
  conversational prompts), in the same order: TRL gets them in the order OpenRLHF's seeded sampler draws them, with
  its own shuffling off, so step k of both uses the same prompts (checked after the run from the reward log);
- rollout: [8] prompts x n [4] samples, [48] max new tokens, temperature 1.0, top-p 1.0, no top-k, stop at
  ``<|im_end|>``, all [32] sequences in one ``generate`` call (ours ``--local.generate_batch_size``);
- reward: ``bench/bench_reward_func.py``'s ``score_response`` (deterministic, sub-millisecond); ours reads it through
  ``--reward.remote_url`` (with the per-sample ``drirl_similarity``/``drirl_reward_gap`` GRPO-S needs), TRL as a
  reward function;
- update: one optimizer step per rollout batch over all of it (ours ``--train.batch_size`` = prompts x n, one epoch;
  TRL ``num_iterations=1``, gradient accumulation = prompts x n / micro batch, so one generation per step), micro
  batches of [8] sequences for the training forward/backward and for the no-grad log-prob forwards (ours
  ``--train.micro_batch_size``/``--rollout.micro_batch_size``, TRL ``per_device_train_batch_size``), AdamW lr [1e-6]
  constant, betas (0.9, 0.95), no weight decay, grad-norm clip 1.0, PPO clip 0.2, token-level loss (OpenRLHF's
  token-level PolicyLoss; TRL ``loss_type="dapo"``), KL to the reference model as a loss with coefficient [0.01]
  and the k3 estimator (ours ``--algo.kl.use_loss --algo.kl.init_coef B --algo.kl.estimator k3``, TRL ``beta=B``);
- threads: ``torch.set_num_threads(--threads)`` and OMP/MKL_NUM_THREADS in both subprocesses.

What each does in a step, as timed here:
- ours (OpenRLHF's PPOTrainer in one process): generation = OpenRLHF's SamplesGenerator -> agent executor -> the HF
  backend (``HFGenerator``, per-row seeded sampling) + the reward_func per sample; experience = ``make_experience``:
  a no-grad policy forward for the old log-probs, a no-grad reference forward, GRPO-S advantages; train =
  ``ppo_train``: forward/backward per micro batch (PolicyLoss + k3 KL loss), one AdamW step.
- TRL: generation = ``_generate`` (HF ``generate`` on the whole batch); experience = the rest of
  ``_generate_and_score_completions``: a no-grad reference forward, the reward, group-normalised advantages;
  train = the per-micro-batch forward/backward (clipped surrogate + beta * k3) and the optimizer step.

What is not identical, and why it is left so:
- Old log-probs: with one update per rollout TRL does not compute them (it uses the detached current log-probs,
  the ratio is exactly 1); OpenRLHF always runs that extra no-grad policy forward. It is part of ours' cost and is
  shown as its own column.
- Logits: TRL scores through its fused LM head (``fused_lm_head=True``): the head is applied, in tiles, only at
  completion positions, and the training forward also computes entropies; OpenRLHF's Actor materialises the logits
  and a float32 log-softmax for every position of prompt + response.
- Padding: TRL pads each micro batch to the longest prompt / completion of the whole generation batch; OpenRLHF pads
  per micro batch.
- Advantages: GRPO-S (ours) vs TRL's group-normalised rewards; both are a few tensor ops on 32 numbers.
- Sampling: the same distribution, but different random draws, so response lengths differ; the table shows the
  mean response length of each. The reward is counted in ours' generation column (the executor calls it right after
  each sample) and in TRL's experience column.
- seconds/step is the wall time between consecutive step ends (what a user waits), so it also holds logging;
  "other" is what the named parts do not cover.

Options for profiling (each run still times both, so the ratio stays within one run):
- ``--micro_batch_size``, ``--gradient_checkpointing``: for both (ours ``--actor.gradient_checkpointing_enable``);
- ``--lora_rank R``: both train LoRA adapters on all linear layers (alpha 16); TRL then takes the reference
  log-probs from the base model with the adapter off, ours still loads a separate reference model;
- ``--ours_flags="..."``: any train_ppo_local flags for ours only (e.g. ``--ds.lora.rank 16``,
  ``--local.generate_batch_size 16``), after the ones above, so they win;
- ours skips make_experience's old log-prob forward here (``--local.old_log_probs auto``: one epoch, one optimizer
  step per rollout, KL as a loss), as TRL does; ``--ours_flags="--local.old_log_probs forward"`` times OpenRLHF's
  path with the forward.
"""

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REWARD_FILE = os.path.join(HERE, "bench_reward_func.py")
PROMPTS = os.path.join(ROOT, "data_tools", "bundled", "eval", "strongreject.jsonl")
TARGET = 1.0  # ours / TRL seconds per step


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts_per_step", type=int, default=8)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt (group size)")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--micro_batch_size", type=int, default=8, help="sequences per forward/backward")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.01, help="KL coefficient against the reference model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--frameworks", default="ours,trl", help="comma-separated, run in this order")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each framework, order alternating (A B B A)")
    parser.add_argument(
        "--generate_batch_size", type=int, default=0, help="ours' --local.generate_batch_size (0: the whole batch)"
    )
    parser.add_argument(
        "--ours_flags",
        default="",
        help='extra train_ppo_local flags as one string, written --ours_flags="--flag value"',
    )
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="both: ours --actor.gradient_checkpointing_enable"
    )
    parser.add_argument(
        "--lora_rank", type=int, default=0, help="> 0: both train LoRA adapters (all linear layers, alpha 16)"
    )
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded SmolLM2)")
    parser.add_argument("--workdir", default=None, help="default: a new temporary folder")
    parser.add_argument("--_worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.prompts_per_step * args.n
    if args.batch % args.micro_batch_size:
        parser.error(f"--micro_batch_size {args.micro_batch_size} must divide prompts x n = {args.batch}")
    args.generate_batch_size = args.generate_batch_size or args.batch
    args.total_steps = args.warmup + args.steps
    return args


# ---------------------------------------------------------------------------------------------------------------- data


def prompt_texts(count: int):
    with open(PROMPTS) as f:
        texts = [json.loads(line)["prompt"] for line in f if line.strip()]
    if len(texts) < count:
        raise SystemExit(f"{PROMPTS} has {len(texts)} prompts, {count} are needed")
    return texts[:count]


def openrlhf_order(count: int, seed: int):
    """The order in which OpenRLHF's prompt loader (DistributedSampler, one rank, shuffled with the seed) draws."""
    from openrlhf.utils.distributed_sampler import DistributedSampler

    return list(iter(DistributedSampler(range(count), num_replicas=1, rank=0, shuffle=True, seed=seed)))


def write_prompt_file(args, path: str) -> None:
    from openrlhf_drirl.contract import DEFAULT_CATEGORIES

    with open(path, "w") as f:
        for i, text in enumerate(prompt_texts(args.total_steps * args.prompts_per_step)):
            # GRPO-S groups by the label's category; spread the prompts over the default ones.
            label = {"category": DEFAULT_CATEGORIES[i % len(DEFAULT_CATEGORIES)]}
            f.write(json.dumps({"prompt": text, "label": label}) + "\n")


# ------------------------------------------------------------------------------------------------------------- workers


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def ours_argv(args, model: str, workdir: str):
    argv = [
        "--actor.model_name_or_path", model,
        "--reward.remote_url", REWARD_FILE,
        "--data.prompt_dataset", os.path.join(workdir, "prompts.jsonl"),
        "--data.input_key", "prompt",
        "--data.label_key", "label",
        "--data.apply_chat_template",
        "--data.max_len", "2048",
        "--rollout.batch_size", str(args.prompts_per_step),
        "--rollout.n_samples_per_prompt", str(args.n),
        "--rollout.max_new_tokens", str(args.max_new_tokens),
        "--rollout.temperature", "1.0",
        "--rollout.top_p", "1.0",
        "--rollout.micro_batch_size", str(args.micro_batch_size),
        "--local.generate_batch_size", str(args.generate_batch_size),
        "--train.batch_size", str(args.batch),
        "--train.micro_batch_size", str(args.micro_batch_size),
        "--train.max_epochs", "1",
        "--train.num_episodes", "1",
        "--train.seed", str(args.seed),
        "--algo.advantage.estimator", "grpo_s",
        "--algo.kl.use_loss",
        "--algo.kl.init_coef", str(args.beta),
        "--algo.kl.estimator", "k3",
        "--actor.adam.lr", str(args.lr),
        "--actor.adam.betas", "0.9", "0.95",
        "--actor.lr_scheduler", "constant",
        "--actor.lr_warmup_ratio", "0",
        "--ckpt.output_dir", os.path.join(workdir, "ours_policy"),
        "--ckpt.path", os.path.join(workdir, "ours_ckpt"),
    ]  # fmt: skip
    if args.gradient_checkpointing:
        argv.append("--actor.gradient_checkpointing_enable")
    if args.lora_rank:
        # --ds.lora.target_modules keeps its default, the string "all-linear": given on the command line it becomes
        # the list ["all-linear"], which PEFT takes for a module name and fails on.
        argv += ["--ds.lora.rank", str(args.lora_rank), "--ds.lora.alpha", "16"]
    return argv + shlex.split(args.ours_flags)


class Timer:
    """Wraps ``owner.name`` so each call adds its wall time to ``self.total`` (``when`` filters the calls)."""

    def __init__(self, owner, name, when=None):
        self.total, self.when = 0.0, when
        original = getattr(owner, name)

        def timed(*a, **kw):
            if self.when is not None and not self.when():
                return original(*a, **kw)
            start = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.total += time.perf_counter() - start

        setattr(owner, name, timed)

    def take(self) -> float:
        value, self.total = self.total, 0.0
        return value


def cpu_pressure_seconds() -> float:
    """Linux PSI: total seconds some runnable task of this machine waited for a CPU (nan where unavailable)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().split("total=")[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return float("nan")


class StepClock:
    """Per step: wall time, this process's CPU time (all its threads) and the share of the wall time in which the
    machine had runnable tasks waiting for a CPU (other users' jobs show up there). A step runs from the previous
    step's end, so the first holds the start-up and is the warm-up."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.steps = name, total, []
        self.mark()

    @staticmethod
    def now():
        return time.perf_counter(), time.process_time(), cpu_pressure_seconds()

    def mark(self) -> None:
        self.last = self.now()

    def step_end(self, **parts) -> dict:
        import torch

        now = self.now()
        wall = now[0] - self.last[0]
        step = dict(wall=wall, cpu=now[1] - self.last[1], cpu_wait=(now[2] - self.last[2]) / wall, **parts)
        step["threads"] = torch.get_num_threads()
        self.steps.append(step)
        self.last = now
        print(
            f"[{self.name}] step {len(self.steps)}/{self.total} done: {wall:.1f} s wall, {step['cpu']:.1f} s CPU, "
            f"CPU wait {step['cpu_wait']:.0%}",
            flush=True,
        )
        return step


def worker_ours(args, model: str, workdir: str):
    """train_ppo_local in this process; the parts are OpenRLHF's own timings (its logged timing/*)."""
    set_threads(args.threads)
    import torch
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer
    from openrlhf.trainer.ray.launcher import ReferenceModelActor
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    from openrlhf_drirl.cli import train_ppo_local

    # Split make_experience into its two model forwards (no-grad calls only: training calls the Actor directly).
    old_logp = Timer(PolicyModelActor.__ray_actor_class__, "forward", when=lambda: not torch.is_grad_enabled())
    ref_logp = Timer(ReferenceModelActor.__ray_actor_class__, "forward")
    clock = StepClock("ours", args.total_steps)
    original = BasePPOTrainer.save_logs_and_checkpoints

    def record(self, global_step, logs_dict=None, client_states=None):
        # Called once per step, right after the optimizer step; logging and checkpointing then count in the next
        # step, as TRL's do.
        logs = dict(logs_dict or {})
        clock.step_end(
            generation=logs.get("timing/generation"),
            experience=logs.get("timing/make_experience"),
            old_logp=old_logp.take(),
            ref_logp=ref_logp.take(),
            train=logs.get("timing/ppo_train", 0.0) + logs.get("timing/broadcast", 0.0),
            response_tokens=logs.get("rollout/response_length_mean"),
            reward_mean=logs.get("rollout/reward_mean"),
        )
        return original(self, global_step, logs_dict, client_states)

    BasePPOTrainer.save_logs_and_checkpoints = record
    train_ppo_local.main(ours_argv(args, model, workdir))
    return clock.steps


def worker_trl(args, model: str, workdir: str):
    # The CPU venv's shim provides a stand-in ``vllm`` module for OpenRLHF's imports; TRL would take it for a real
    # vLLM and import its internals. Hiding it makes TRL take its plain transformers path.
    sys.modules["vllm"] = None
    set_threads(args.threads)
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, HERE)
    from bench_reward_func import trl_reward

    clock = StepClock("trl", args.total_steps)
    texts = prompt_texts(args.total_steps * args.prompts_per_step)
    ordered = [texts[i] for i in openrlhf_order(len(texts), args.seed)]
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": text}]} for text in ordered])
    config = GRPOConfig(
        output_dir=os.path.join(workdir, "trl_out"),
        use_cpu=True,
        bf16=False,  # GRPOConfig defaults to bf16 and gradient checkpointing: ours runs neither by default
        fp16=False,
        gradient_checkpointing=args.gradient_checkpointing,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
        per_device_train_batch_size=args.micro_batch_size,
        gradient_accumulation_steps=args.batch // args.micro_batch_size,  # so one generation, one update per step
        num_generations=args.n,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.beta,
        epsilon=0.2,
        loss_type="dapo",
        use_bias_correction_kl=False,  # the IS ratio is 1 on-policy anyway; OpenRLHF's k3 loss has no such factor
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        shuffle_dataset=False,  # the dataset is already in OpenRLHF's draw order
        seed=args.seed,
        max_steps=args.total_steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        dataloader_num_workers=0,
    )
    peft_config = None
    if args.lora_rank:
        from peft import LoraConfig

        # As OpenRLHF's --ds.lora.*; with an adapter TRL takes the reference from the base model (adapter off)
        # instead of loading a second model, as ours does.
        peft_config = LoraConfig(
            r=args.lora_rank, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_reward, args=config, train_dataset=dataset, peft_config=peft_config
    )
    generation = Timer(trainer, "_generate")
    rollout = Timer(trainer, "_generate_and_score_completions")
    ref_logp = Timer(trainer, "_get_per_token_logps_and_entropies", when=lambda: not torch.is_grad_enabled())

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a, **kw):
            total_rollout, generated = rollout.take(), generation.take()
            step = clock.step_end(
                generation=generated, experience=total_rollout - generated, old_logp=0.0, ref_logp=ref_logp.take()
            )
            step["train"] = step["wall"] - total_rollout  # after the rollout until the optimizer step ends

        def on_log(self, _args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                step = clock.steps[state.global_step - 1]
                step["response_tokens"] = logs["completions/mean_length"]
                step["reward_mean"] = logs.get("reward")

    trainer.add_callback(StepTimes())
    trainer.train()
    return clock.steps


def run_worker(name: str, args, model: str, workdir: str):
    """This script with --_worker NAME in a fresh Python process. Its output (OpenRLHF logs to stdout, TRL prints its
    logs, both draw progress bars) goes to <workdir>/<name>.log; only the per-step progress lines are echoed."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED="1")
    env["BENCH_REWARD_LOG"] = os.path.join(workdir, "rewards.jsonl")
    command = [sys.executable, os.path.abspath(__file__), *args.argv, "--_worker", name, "--workdir", workdir]
    command += ["--model", model]
    log_path = os.path.join(workdir, f"{name}.log")
    print(f"[{name}] starting (log: {log_path})", flush=True)
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        for line in process.stdout:
            log.write(line)
            at = line.find(f"[{name}] step ")  # may follow a progress bar's carriage return-less update
            if at >= 0:
                print(line[at:], end="", flush=True)
        process.wait()
    if process.returncode != 0:
        with open(log_path) as f:
            sys.stderr.write(f.read()[-4000:])
        raise SystemExit(f"[{name}] failed with exit code {process.returncode}: see {log_path}")
    with open(os.path.join(workdir, f"{name}.json")) as f:
        result = json.load(f)
    shutil.rmtree(os.path.join(workdir, "ours_policy"), ignore_errors=True)  # the saved policy: 0.5 GB, not needed
    result["process_s"] = time.perf_counter() - started
    return result


# -------------------------------------------------------------------------------------------------------------- report


def mean_of(steps, key):
    values = [s.get(key) for s in steps]
    return statistics.fmean(values) if values and all(v is not None for v in values) else float("nan")


def same_prompts_per_step(workdir: str, args, names):
    """From the reward log: does step k of every framework score the same multiset of prompts?"""
    path = os.path.join(workdir, "rewards.jsonl")
    if not os.path.exists(path) or len(names) < 2:
        return None
    by_framework = {name: [] for name in names}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            by_framework.setdefault(row["framework"], []).append(row["prompt"])
    per_step = {
        name: [sorted(rows[i : i + args.batch]) for i in range(0, len(rows), args.batch)]
        for name, rows in by_framework.items()
    }
    first, *rest = [per_step[name] for name in names]
    return all(other == first for other in rest) and len(first) == args.total_steps


def report(args, timed, same_prompts):
    """``timed``: per framework, the steps after the warm-up of every run."""
    print()
    print(
        f"GRPO step, SmolLM2-135M fp32 CPU, {args.threads} threads: {args.prompts_per_step} prompts x n={args.n} = "
        f"{args.batch} sequences, {args.max_new_tokens} new tokens, micro batch {args.micro_batch_size}, "
        f"generate batch {args.generate_batch_size}, beta {args.beta}, lr {args.lr}; mean of {args.steps} steps after "
        f"{args.warmup} warm-up, {args.rounds} round(s)"
    )
    if args.ours_flags:
        print(f"ours' extra flags: {args.ours_flags}")
    if args.gradient_checkpointing or args.lora_rank:
        print(
            f"both: gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, LoRA rank {args.lora_rank}"
        )
    header = (
        f"{'framework':<10}{'s/step':>8}{'CPU s':>8}{'CPU wait':>9}{'generation':>11}{'experience':>11}"
        f"{'(old logp':>10}{'ref logp)':>10}{'train':>8}{'other':>7}{'steps':>6}{'resp tok':>9}{'reward':>8}"
    )
    print(header)
    print("-" * len(header))
    means = {}
    for name, steps in timed.items():
        m = means[name] = {key: mean_of(steps, key) for key in steps[0]} if steps else {}
        other = m["wall"] - m["generation"] - m["experience"] - m["train"]
        print(
            f"{name:<10}{m['wall']:>8.2f}{m['cpu']:>8.2f}{m['cpu_wait']:>9.0%}{m['generation']:>11.2f}"
            f"{m['experience']:>11.2f}{m['old_logp']:>10.2f}{m['ref_logp']:>10.2f}{m['train']:>8.2f}{other:>7.2f}"
            f"{len(steps):>6}{m.get('response_tokens', float('nan')):>9.1f}{m.get('reward_mean', float('nan')):>8.3f}"
        )
    for name, steps in timed.items():
        print(f"{name} s/step of each timed step: " + ", ".join(f"{s['wall']:.2f}" for s in steps))
    if same_prompts is not None:
        print(f"same prompts in each step for both: {'yes' if same_prompts else 'NO'}")
    if "ours" in means and "trl" in means:
        ratio = means["ours"]["wall"] / means["trl"]["wall"]
        cpu_ratio = means["ours"]["cpu"] / means["trl"]["cpu"]
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"ratio ours / TRL: {ratio:.3f} s/step (target <= {TARGET:.1f}: {verdict}); {cpu_ratio:.3f} CPU s/step")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv  # passed on to the workers (their --workdir and --model come after, and win)
    if args._worker:
        worker = worker_ours if args._worker == "ours" else worker_trl
        steps = worker(args, args.model, args.workdir)
        with open(os.path.join(args.workdir, f"{args._worker}.json"), "w") as f:
            json.dump({"steps": steps}, f)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from openrlhf_drirl.embedded_model import smollm2_path

    model = args.model or smollm2_path()
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_grpo_vs_trl_")
    names = [name.strip() for name in args.frameworks.split(",") if name.strip()]
    print(f"model {model}; {args.total_steps} steps per run; workdir {workdir}", flush=True)
    timed, same = {name: [] for name in names}, []
    for round_index in range(args.rounds):
        # Alternate the order (A B, B A, ...) so that a slow spell of the machine does not always hit the same one.
        order = names if round_index % 2 == 0 else names[::-1]
        run_dir = os.path.join(workdir, f"round{round_index + 1}")
        os.makedirs(run_dir, exist_ok=True)
        write_prompt_file(args, os.path.join(run_dir, "prompts.jsonl"))
        if os.path.exists(os.path.join(run_dir, "rewards.jsonl")):
            os.remove(os.path.join(run_dir, "rewards.jsonl"))
        for name in order:
            result = run_worker(name, args, model, run_dir)
            print(
                f"[{name}] the subprocess took {result['process_s']:.0f} s (start-up, {args.total_steps} steps, save)"
            )
            timed[name] += result["steps"][args.warmup :]
        same.append(same_prompts_per_step(run_dir, args, names))
    report(args, timed, None if None in same else all(same))


if __name__ == "__main__":
    main()

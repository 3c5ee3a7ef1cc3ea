"""OpenRLHF's ``train()`` of ``train_ppo_ray``, in one process: the same models, trainer and order, with the stand-ins
of this package in place of Ray actors, vLLM engines and DeepSpeed (see ``openrlhf_drirl/local/__init__.py``)."""

import functools
import os
import socket
import time
from typing import Optional
from urllib.parse import urlparse

import torch
from tqdm import tqdm

from openrlhf_drirl import register
from openrlhf_drirl.generation.hf import HFGenerator
from openrlhf_drirl.local import rollout_log
from openrlhf_drirl.local.rollout import LocalRolloutEngine
from openrlhf_drirl.local.stand_ins import LocalActorHandle, free_port, local_actor_group, one_process_openrlhf
from openrlhf_drirl.training.strategy import TorchStrategy

RNG_STATE_KEY = "drirl_local_rng_state"  # torch's RNG (rollout seeds, replay-buffer order) in the checkpoint


def old_log_probs_forward_needed(args) -> Optional[str]:
    """Why make_experience's no-grad policy forward (the "old" log-probs) is needed, or None when it is redundant.

    It is redundant when every training forward runs on the weights that sampled the rollout and nothing else reads
    the old log-probs: one epoch, one optimizer step per rollout (gradient accumulation over the whole batch), and
    the KL (if any) a loss without the unbiased-gradient correction (a KL in the reward, or that correction, reads
    them). PolicyLoss then gets the detached current log-probs as the old ones: ratio 1, the same gradient, as TRL
    does with one update per rollout.
    """
    rollout_samples = args.rollout.batch_size * args.rollout.n_samples_per_prompt
    if args.train.max_epochs != 1:
        return f"--train.max_epochs {args.train.max_epochs} updates the policy before the last epoch's forwards"
    if args.train.batch_size != rollout_samples:
        return (
            f"--train.batch_size {args.train.batch_size} != --rollout.batch_size x --rollout.n_samples_per_prompt "
            f"({rollout_samples}): several optimizer steps per rollout"
        )
    if args.algo.kl.init_coef > 0 and not args.algo.kl.use_loss:
        return "the KL is in the reward (no --algo.kl.use_loss), which reads the old log-probs"
    if args.algo.kl.init_coef > 0 and args.algo.kl.unbiased_gradient:
        return "--algo.kl.unbiased_gradient reads the old log-probs"
    return None


def check_reward_urls(urls, tries: int = 5) -> None:
    """Fail fast, with the flag named, when a reward server does not accept connections (bounded: ``tries`` s)."""
    for url in urls:
        if url.endswith(".py"):
            if not os.path.isfile(url):
                raise ValueError(f"--reward.remote_url {url}: no such reward function file")
            continue
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"--reward.remote_url {url!r} is neither http(s)://host:port/path nor a .py file")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        for attempt in range(tries):
            try:
                socket.create_connection((parsed.hostname, port), timeout=2).close()
                break
            except OSError as e:
                if attempt == tries - 1:
                    raise ValueError(
                        f"--reward.remote_url {url}: cannot connect to {parsed.hostname}:{port} after {tries} tries "
                        f"({type(e).__name__}): start the reward server first (openrlhf_drirl.cli.serve_category_rm)"
                    ) from None
                time.sleep(1)


def local_classes():
    """OpenRLHF's trainer and model actors (the classes under their Ray wrappers), with the one-process changes."""
    from openrlhf.trainer.ppo_trainer import PPOTrainer
    from openrlhf.trainer.ray.launcher import ReferenceModelActor
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    class LocalPolicyModelActor(PolicyModelActor.__ray_actor_class__):
        current_as_old_log_probs = False  # set by train() where old_log_probs_forward_needed(args) is None

        def init_model_from_pretrained(self, *args, **kwargs):
            super().init_model_from_pretrained(*args, **kwargs)
            if self.current_as_old_log_probs:
                self.trainer.actor_loss_fn = CurrentAsOldPolicyLoss(self.trainer.actor_loss_fn)

        def forward(self, sequences, action_mask=None, *args, **kwargs):
            if self.current_as_old_log_probs:
                return torch.zeros(action_mask.shape)  # a placeholder: CurrentAsOldPolicyLoss never reads it
            return super().forward(sequences, action_mask, *args, **kwargs)

        def broadcast_to_vllm(self):
            pass  # the rollout engine samples from this very model

    class LocalPPOTrainer(PPOTrainer.__ray_actor_class__):
        """Adds torch's RNG state to the checkpoint (a resumed run draws what an uninterrupted one draws), a
        progress bar over steps with reward and KL, the per-sample rollout log (``rollout_log.py``), and with
        ``--eval.dataset`` the same rows of OpenRLHF's evaluation samples, at step 0 (the initial policy) too."""

        rollout_log = None  # set by train(): the JSONL file of every rollout sample
        eval_log = None  # set by train() with --eval.dataset: the JSONL file of every evaluation sample

        def init_checkpoint_states(self):
            states = super().init_checkpoint_states()
            if RNG_STATE_KEY in states:
                torch.set_rng_state(states[RNG_STATE_KEY])
            self.step_bar = tqdm(total=self.max_steps, initial=states["global_step"], desc="steps", unit="step")
            if self.rollout_log:
                rollout_log.truncate_after(self.rollout_log, states["global_step"])
            if self.eval_log and self.eval_dataloader:
                rollout_log.truncate_after(self.eval_log, states["global_step"])
                if states["global_step"] == 0:  # OpenRLHF evaluates after steps only: the start is the baseline
                    kwargs = dict(self.generate_kwargs, temperature=self.args.eval.temperature)
                    self.evaluate(0, n_samples_per_prompt=self.args.eval.n_samples_per_prompt, **kwargs)
            return states

        def append_log(self, path, experiences, step):
            decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True)
            rollout_log.append_rows(path, rollout_log.rollout_rows(experiences, step, decode))

        def evaluate(self, global_step, **generate_kwargs):
            if not self.eval_log:
                return super().evaluate(global_step, **generate_kwargs)
            generate_eval_samples = self.samples_generator.generate_eval_samples

            def generate_and_log(**kwargs):
                samples = generate_eval_samples(**kwargs)
                self.append_log(self.eval_log, samples, global_step)
                return samples

            self.samples_generator.generate_eval_samples = generate_and_log
            try:
                return super().evaluate(global_step, **generate_kwargs)
            finally:
                del self.samples_generator.generate_eval_samples

        def train_step(self, rollout_samples, global_step):
            if not self.rollout_log:
                return super().train_step(rollout_samples, global_step)
            make_experience_batch = self.experience_maker.make_experience_batch

            def make_and_log(samples):
                experiences = make_experience_batch(samples)
                self.append_log(self.rollout_log, experiences, global_step + 1)
                return experiences

            self.experience_maker.make_experience_batch = make_and_log
            try:
                return super().train_step(rollout_samples, global_step)
            finally:
                del self.experience_maker.make_experience_batch  # back to the class's method

        def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
            logs_dict = logs_dict or {}
            self.step_bar.update(global_step - self.step_bar.n)
            self.step_bar.set_postfix(
                reward=f"{logs_dict.get('rollout/reward_mean', float('nan')):.3f}",
                kl=f"{logs_dict.get('kl', 0.0):.4f}",
            )
            client_states = dict(client_states or {}, **{RNG_STATE_KEY: torch.get_rng_state()})
            return super().save_logs_and_checkpoints(global_step, logs_dict, client_states)

    return LocalPPOTrainer, LocalPolicyModelActor, ReferenceModelActor.__ray_actor_class__


class CurrentAsOldPolicyLoss(torch.nn.Module):
    """OpenRLHF's PolicyLoss, given the detached current log-probs as the old ones (old_log_probs_forward_needed)."""

    def __init__(self, policy_loss):
        super().__init__()
        self.policy_loss = policy_loss

    def forward(self, log_probs, old_log_probs, *args, **kwargs):
        return self.policy_loss(log_probs, log_probs.detach(), *args, **kwargs)


def train(
    args,
    generate_batch_size: int = 32,
    old_log_probs: str = "auto",
    rollout_log_path: str = "",
    eval_log_path: str = "",
) -> str:
    """Train as OpenRLHF's ``train()`` would, in this process; returns the folder of the saved policy."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    register()  # the experience maker with the registered estimators
    check_reward_urls(args.reward.remote_url or [])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    strategy = TorchStrategy(
        seed=args.train.seed,
        full_determinism=args.train.full_determinism_enable,
        max_norm=args.actor.max_norm,
        micro_train_batch_size=args.train.micro_batch_size,
        train_batch_size=args.train.batch_size,
        args=args,
    )
    trainer_class, policy_class, reference_class = local_classes()
    with one_process_openrlhf(device):
        address, port = "127.0.0.1", free_port()
        engine = LocalRolloutEngine(
            SingleTurnAgentExecutor(args.reward.remote_url), f"--reward.remote_url {','.join(args.reward.remote_url)}"
        )
        policy = policy_class(1, 0, address, port)
        reason = old_log_probs_forward_needed(args)
        policy.current_as_old_log_probs = old_log_probs == "auto" and reason is None
        print(
            "train_ppo_local: old log-probs = the detached current ones (one update per rollout; "
            "--local.old_log_probs forward to compute them)"
            if policy.current_as_old_log_probs
            else f"train_ppo_local: old log-probs from a policy forward per rollout ({reason or 'asked for'})"
        )
        reference = reference_class(1, 0, address, port) if args.algo.kl.init_coef > 0 else None
        trainer = trainer_class(
            args.actor.model_name_or_path,
            strategy,
            local_actor_group(policy),
            None,  # no critic: the local trainer runs group estimators (checked by the CLI)
            None,  # no reward model group: rewards come from --reward.remote_url
            local_actor_group(reference) if reference else None,
            [LocalActorHandle(engine)],
            do_sample=True,
            max_len=args.data.max_len,
            max_new_tokens=args.rollout.max_new_tokens,
            temperature=args.rollout.temperature,
            top_p=args.rollout.top_p,
        )
        if rollout_log_path:
            os.makedirs(os.path.dirname(os.path.abspath(rollout_log_path)), exist_ok=True)
            trainer.rollout_log = rollout_log_path
        if eval_log_path and args.eval.dataset:
            os.makedirs(os.path.dirname(os.path.abspath(eval_log_path)), exist_ok=True)
            trainer.eval_log = eval_log_path
        # vllm_engines=None: the policy has no engine to broadcast its weights to.
        policy.init_model_from_pretrained(strategy, args.actor.model_name_or_path, trainer.get_max_steps(), None)
        if reference is not None:
            reference.init_model_from_pretrained(strategy, args.actor.model_name_or_path)
        if device == "cuda":
            policy.actor.to(device)
            if reference is not None:
                reference.model.to(device)
        engine.generator = HFGenerator(policy.actor.model, policy.tokenizer, batch_size=generate_batch_size)
        trainer.fit()
        trainer.step_bar.close()
        policy.save_model()
    return args.ckpt.output_dir

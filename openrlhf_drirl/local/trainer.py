"""OpenRLHF's ``train()`` of ``train_ppo_ray``, in one process: the same models, trainer and order, with the stand-ins
of this package in place of Ray actors, vLLM engines and DeepSpeed (see ``openrlhf_drirl/local/__init__.py``)."""

import os
import socket
import time
from urllib.parse import urlparse

import torch
from tqdm import tqdm

from openrlhf_drirl import register
from openrlhf_drirl.generation.hf import HFGenerator
from openrlhf_drirl.local.rollout import LocalRolloutEngine
from openrlhf_drirl.local.stand_ins import LocalActorHandle, free_port, local_actor_group, one_process_openrlhf
from openrlhf_drirl.training.strategy import TorchStrategy

RNG_STATE_KEY = "drirl_local_rng_state"  # torch's RNG (rollout seeds, replay-buffer order) in the checkpoint


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
        def broadcast_to_vllm(self):
            pass  # the rollout engine samples from this very model

    class LocalPPOTrainer(PPOTrainer.__ray_actor_class__):
        """Adds torch's RNG state to the checkpoint (a resumed run draws what an uninterrupted one draws) and a
        progress bar over steps with reward and KL."""

        def init_checkpoint_states(self):
            states = super().init_checkpoint_states()
            if RNG_STATE_KEY in states:
                torch.set_rng_state(states[RNG_STATE_KEY])
            self.step_bar = tqdm(total=self.max_steps, initial=states["global_step"], desc="steps", unit="step")
            return states

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


def train(args, generate_batch_size: int = 32) -> str:
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

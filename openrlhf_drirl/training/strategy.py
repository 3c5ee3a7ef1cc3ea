"""The training engine behind OpenRLHF's strategy interface. ``get_training_strategy(args)`` gives OpenRLHF's own
``DeepspeedStrategy``, on GPU ranks or on CPU ranks (``cpu_deepspeed.use_cpu_for_deepspeed``); trainers then call only
strategy methods. ``TorchStrategy`` (plain torch, one process) is what ``train_ppo_local`` still runs on.

The interface is what OpenRLHF's trainers call on ``strategy`` (``RewardModelTrainer``, ``ActorPPOTrainer``,
``PolicyModelActor``, ``PPOTrainer``'s datasets): ``args``, ``setup_distributed``, ``prepare``, ``backward``,
``optimizer_step``, ``get_grad_norm``, ``moving_average``, ``save_ckpt``, ``load_ckpt``, ``save_model``,
``setup_dataloader``, ``all_reduce``, ``all_gather``, ``print``, ``is_rank_0``, ``get_rank``, ``world_size``,
``accumulated_gradient``, ``ring_attn_group``, ``_unwrap_model``, ``get_ds_train_config``/``get_ds_eval_config``.
"""

import json
import math
import os
import shutil
import socket
import tempfile

import torch
import torch.nn as nn
import transformers
from transformers.trainer import get_scheduler

CKPT_FILE = "checkpoint.pt"
METRIC_FILE = "metric.json"  # DeepspeedStrategy.CKPT_METRIC_FILENAME
LATEST_FILE = "latest"  # as DeepSpeed: the newest tag of a checkpoint folder, read when loading with tag=None


def zero3_on_cpu_ranks_error(ranks) -> str:
    """Why ZeRO-3 is refused on several CPU ranks, and the fix. Measured with DeepSpeed 0.19.6 + transformers 5.15 on
    gloo: in about 1 of 3 runs, loading the checkpoint into ZeRO-3 partitions (GatheredParameters, modifier_rank=0)
    leaves some weights as uninitialised memory (1e38 or NaN) on every rank, so training silently starts from a
    corrupted model. One rank is unaffected."""
    return (
        f"--ds.zero_stage 3 on {ranks} CPU ranks loads corrupted weights (DeepSpeed's ZeRO-3 load on gloo): use "
        "--ds.zero_stage 2 (or 1), or ZeRO-3 on one rank or on GPUs"
    )


def get_training_strategy(args):
    """OpenRLHF's ``DeepspeedStrategy``, on GPU ranks when CUDA is available, else (or with ``--train.cpu``) on CPU
    ranks (gloo, through ``use_cpu_for_deepspeed``). The one place that looks at the device: everything after it goes
    through the strategy.

    On CPU, ``--ds.param_dtype`` and ``--ds.attn_implementation`` left at None become "fp32" and "sdpa" (CPU has no
    bf16 speed-up and no flash attention; on GPU "bf16" and "flash_attention_2"), and a process started without a
    launcher (``python -m ...``, no ``RANK``) is one rank of one. Several ranks: ``torchrun --nproc_per_node N``."""
    from openrlhf.utils import get_strategy

    cpu = getattr(args.train, "cpu", False) or not torch.cuda.is_available()
    if cpu and getattr(args.ds, "zero_stage", 0) == 3 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(zero3_on_cpu_ranks_error(os.environ["WORLD_SIZE"]))
    if cpu:
        from openrlhf_drirl.training.cpu_deepspeed import use_cpu_for_deepspeed

        use_cpu_for_deepspeed()
        if "RANK" not in os.environ:
            # No launcher (python -m ...): one rank. The group is made here on a file store, which DeepSpeed adopts
            # (it only checks that the launcher's variables exist), so the port in MASTER_PORT stays free for a
            # subprocess that inherits these variables (a resumed run) to start its own one-rank group on.
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            if not torch.distributed.is_initialized():
                store = tempfile.NamedTemporaryFile(prefix="drirl_gloo_", delete=False).name
                torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    for name, on_cpu, on_gpu in (
        ("param_dtype", "fp32", "bf16"),
        ("attn_implementation", "sdpa", "flash_attention_2"),
    ):
        if getattr(args.ds, name, None) is None:
            setattr(args.ds, name, on_cpu if cpu else on_gpu)
    return get_strategy(args)


class TorchStrategy:
    """A plain-torch stand-in for OpenRLHF's ``DeepspeedStrategy``, kept for ``train_ppo_local`` alone (the IRL trainer
    runs DeepspeedStrategy itself on CPU ranks). That one-process run of OpenRLHF's ``train()`` wraps the policy in
    in-process stand-ins (``local.stand_ins``: LocalRay, ``ResponseLogitsActor``, its own current-device and fp32
    patches) whose optimizer steps, checkpoints and RNG-state resume are tested against this class; moving it onto
    DeepspeedStrategy is the port of train_ppo_local, not a strategy change, and is moot once ``train_ppo_ray`` runs
    on a local CPU Ray cluster (DeepspeedStrategy through ``use_cpu_for_deepspeed``) and replaces it.

    Same methods, signatures and semantics, in one process with plain torch on CPU (``world_size`` 1, rank 0,
    collectives are identities):

    - ``prepare((model, cfg))`` builds what DeepSpeed builds from the same ``cfg``: AdamW (``cfg["adam"]``, no decay
      on bias/norm weights) and the ``transformers.get_scheduler`` schedule of ``cfg["scheduler_steps"]`` steps;
    - gradient accumulation as DeepSpeed does it: ``backward`` scales the loss by 1 / ``accumulated_gradient``
      (train_batch_size // micro_train_batch_size) and ``optimizer_step`` is called after every micro-batch but steps
      (clip to ``cfg["max_norm"]``, optimizer, scheduler, zero grads) only on every ``accumulated_gradient``-th call;
    - ``save_ckpt`` writes ``save_dir/<tag>/checkpoint.pt`` (model, optimizer, scheduler, client_state) into a temp
      folder renamed into place, then the ``latest`` file, then evicts beyond ``max_num``/``max_mem`` as DeepSpeed
      (no metric first, then the worst metric, then the oldest; ``best*`` tags are kept), so a kill never leaves a
      half-written checkpoint;
    - ``load_ckpt`` returns ``(folder, client_state)``, or ``(None, {})`` when there is none, as DeepSpeed.

    Models train in the dtype they were loaded in: ``param_dtype`` is "fp32" and ``attn_implementation`` "sdpa" (CPU
    has no bf16 speed-up and no flash attention); the ``--ds.*`` flags are DeepSpeed's and are not read here.
    """

    param_dtype = "fp32"
    attn_implementation = "sdpa"

    def __init__(
        self,
        seed: int = 42,
        full_determinism: bool = False,
        max_norm: float = 0.0,
        micro_train_batch_size: int = 1,
        train_batch_size: int = 1,
        args=None,
    ) -> None:
        self.args = args
        self.seed = seed
        self.full_determinism = full_determinism
        self.max_norm = max_norm
        self.micro_train_batch_size = micro_train_batch_size
        self.train_batch_size = train_batch_size
        self.world_size = 1
        self.accumulated_gradient = max(1, train_batch_size // micro_train_batch_size)
        # DeepSpeed's engine runs with gradient_accumulation_steps 1 under dynamic batching (the trainer decides when
        # to step); accumulated_gradient itself keeps the static value, as in DeepspeedStrategy.
        dynamic_batch = getattr(getattr(args, "train", None), "dynamic_batch_enable", False)
        self._engine_accumulation = 1 if dynamic_batch else self.accumulated_gradient
        self._engines = {}  # unwrapped model -> its optimizer, scheduler, clip norm and counters (a DeepSpeed engine)
        self._ema_steps = 0

    def setup_distributed(self, timeout=None) -> None:
        """Seeds as DeepspeedStrategy does; there is no process group to start."""
        if self.full_determinism:
            transformers.enable_full_determinism(self.seed)
        else:
            transformers.set_seed(self.seed)

    @property
    def ring_attn_group(self):
        return None

    def get_ds_train_config(self, optim_dict=None, *, max_norm=None):
        return None  # model loaders (get_llm_for_sequence_regression, Actor) then skip ZeRO-3 partitioning

    def get_ds_eval_config(self, offload=False):
        return None

    def prepare(self, *args):
        """``(model, cfg)`` -> ``(model, optimizer, scheduler)``; a bare model (evaluation) is returned as is. ``cfg``
        is DeepspeedStrategy.prepare's dict; ``optim`` must be "adam" (DeepSpeed's Muon has no plain-torch twin)."""
        from openrlhf.utils.deepspeed.deepspeed_utils import get_optimizer_grouped_parameters

        ret = []
        for arg in args:
            if not isinstance(arg, tuple):
                ret.append(arg)
                continue
            model, cfg = arg
            if model is None:
                ret.append((None, None, None))
                continue
            if cfg["optim"] != "adam":
                raise ValueError(
                    f"optim {cfg['optim']!r} needs DeepSpeed (a GPU): set --optim / --actor.optim to adam"
                )
            adam = cfg["adam"]
            optimizer = torch.optim.AdamW(
                get_optimizer_grouped_parameters(self._unwrap_model(model), adam["weight_decay"]),
                lr=adam["lr"],
                betas=tuple(adam["betas"]),
                eps=adam["eps"],
            )
            name = cfg.get("lr_scheduler", "cosine_with_min_lr")
            steps = cfg["scheduler_steps"]
            # As DeepspeedStrategy: min_lr_rate is a kwarg of the two cosine-with-min-lr schedules only.
            with_min_lr = name in {"cosine_with_min_lr", "cosine_warmup_with_min_lr"}
            scheduler = get_scheduler(
                name,
                optimizer,
                num_warmup_steps=math.ceil(steps * cfg.get("lr_warmup_ratio", 0.03)),
                num_training_steps=steps,
                scheduler_specific_kwargs={"min_lr_rate": cfg.get("min_lr_ratio", 0.1)} if with_min_lr else {},
            )
            self._engines[self._unwrap_model(model)] = dict(
                optimizer=optimizer,
                scheduler=scheduler,
                max_norm=cfg.get("max_norm", 1.0),
                micro_steps=0,
                grad_norm=0.0,
            )
            ret.append((model, optimizer, scheduler))
        return ret[0] if len(ret) == 1 else ret

    def backward(self, loss: torch.Tensor, model: nn.Module, _optimizer, **kwargs) -> None:
        (loss / self._engine_accumulation).backward()

    def optimizer_step(self, _optimizer, model: nn.Module, _scheduler, name="model", **kwargs) -> None:
        engine = self._engines[self._unwrap_model(model)]
        engine["micro_steps"] += 1
        if engine["micro_steps"] % self._engine_accumulation:
            return
        params = [p for group in engine["optimizer"].param_groups for p in group["params"]]
        # The pre-clipping norm, which is what DeepSpeed's get_global_grad_norm reports; max_norm 0 disables clipping.
        engine["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, engine["max_norm"] or float("inf")))
        engine["optimizer"].step()
        engine["scheduler"].step()
        engine["optimizer"].zero_grad(set_to_none=True)

    def get_grad_norm(self, model: nn.Module) -> float:
        """The global gradient norm before clipping, at the last optimizer step."""
        return self._engines[self._unwrap_model(model)]["grad_norm"]

    @torch.no_grad()
    def moving_average(self, model, model_ema, beta=0.992, device="cpu"):
        """EMA after every optimizer step, as DeepspeedStrategy; ``device`` is unused (the EMA stays where it is)."""
        self._ema_steps += 1
        if self._ema_steps % self._engine_accumulation == 0:
            for param, param_ema in zip(model.parameters(), model_ema.parameters()):
                if param.requires_grad:
                    param_ema.data.copy_((1 - beta) * param.data.to(param_ema.device) + beta * param_ema.data)

    def setup_dataloader(
        self,
        replay_buffer,
        batch_size: int,
        pin_memory: bool = False,
        shuffle=True,
        collate_fn=None,
        drop_last=True,
        sampler=None,
        consumed_samples=0,
        num_workers: int = 0,
    ):
        """As DeepspeedStrategy with one rank: OpenRLHF's DistributedSampler gives the seeded shuffle, ``set_epoch``
        and the ``consumed_samples`` skip that resuming relies on."""
        from openrlhf.utils.distributed_sampler import DistributedSampler
        from torchdata.stateful_dataloader import StatefulDataLoader

        if sampler is None:
            sampler = DistributedSampler(
                replay_buffer,
                num_replicas=1,
                rank=0,
                shuffle=shuffle,
                seed=self.seed,
                drop_last=drop_last,
                consumed_samples=consumed_samples,
            )
        # Its own generator: creating an iterator then draws no number from torch's global RNG, so a resumed run
        # (one more iterator than an uninterrupted one) keeps the same global stream for sampling and shuffles.
        return StatefulDataLoader(
            replay_buffer,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _unwrap_model(self, model) -> nn.Module:
        from openrlhf.models import Actor

        if isinstance(model, Actor):
            return self._unwrap_model(model.model)
        return model.module if hasattr(model, "module") else model

    def save_model(self, model: nn.Module, tokenizer, output_dir, **kwargs) -> None:
        model_to_save = self._unwrap_model(model)
        model_to_save.save_pretrained(output_dir, **kwargs)
        model_to_save.config.to_json_file(os.path.join(output_dir, "config.json"))
        tokenizer.save_pretrained(output_dir)

    def save_ckpt(
        self,
        model,
        save_dir,
        tag=None,
        max_num=3,
        max_mem=1000,
        client_state=None,
        save_latest=True,
        metric_value=None,
        metric_key=None,
    ):
        engine = self._engines[self._unwrap_model(model)]
        tag = tag or f"global_step{engine['micro_steps'] // self._engine_accumulation}"
        os.makedirs(save_dir, exist_ok=True)
        path, tmp_path = os.path.join(save_dir, tag), os.path.join(save_dir, f"{tag}.tmp")
        shutil.rmtree(tmp_path, ignore_errors=True)  # left by a kill during an earlier save
        os.makedirs(tmp_path)
        state = {
            "module": self._unwrap_model(model).state_dict(),
            "optimizer": engine["optimizer"].state_dict(),
            "lr_scheduler": engine["scheduler"].state_dict(),
            "micro_steps": engine["micro_steps"],
            "client_state": client_state or {},
        }
        torch.save(state, os.path.join(tmp_path, CKPT_FILE))
        with open(os.path.join(tmp_path, METRIC_FILE), "w") as f:
            json.dump({"metric_key": metric_key, "metric_value": metric_value}, f, indent=2, sort_keys=True)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp_path, path)
        if save_latest:
            with open(os.path.join(save_dir, LATEST_FILE + ".tmp"), "w") as f:
                f.write(tag)
            os.replace(os.path.join(save_dir, LATEST_FILE + ".tmp"), os.path.join(save_dir, LATEST_FILE))
        self._evict_checkpoints(save_dir, tag, max_num, max_mem)

    def _evict_checkpoints(self, save_dir, new_tag, max_num, max_mem):
        """DeepspeedStrategy's rotation, run after the save so the previous checkpoints survive a kill during it."""
        tags = [
            t
            for t in os.listdir(save_dir)
            if not t.endswith(".tmp") and os.path.isfile(os.path.join(save_dir, t, CKPT_FILE))
        ]
        if new_tag.startswith("best"):
            for stale in [t for t in tags if t.startswith("best") and t != new_tag]:
                shutil.rmtree(os.path.join(save_dir, stale))
                tags.remove(stale)

        def size(tag):
            return sum(
                os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(save_dir, tag)) for f in fs
            )

        def eviction_order(tag):  # no metric first, then the worst metric, then the oldest
            with open(os.path.join(save_dir, tag, METRIC_FILE)) as f:
                metric = json.load(f)["metric_value"]
            return (
                metric is not None,
                metric if metric is not None else -math.inf,
                os.path.getmtime(os.path.join(save_dir, tag)),
            )

        regular = [t for t in tags if not t.startswith("best")]
        candidates = sorted([t for t in regular if t != new_tag], key=eviction_order)
        total = sum(size(t) for t in tags)
        while candidates and (len(regular) > max_num or total > max_mem * 1024**3):
            stale = candidates.pop(0)
            total -= size(stale)
            shutil.rmtree(os.path.join(save_dir, stale))
            regular.remove(stale)
            self.print(f"Deleted checkpoint {os.path.join(save_dir, stale)}")

    def load_ckpt(
        self,
        model,
        load_dir,
        tag=None,
        load_module_strict=True,
        load_optimizer_states=True,
        load_lr_scheduler_states=True,
        load_module_only=False,
    ):
        if tag is None and os.path.isfile(os.path.join(load_dir, LATEST_FILE)):
            with open(os.path.join(load_dir, LATEST_FILE)) as f:
                tag = f.read().strip()
        path = os.path.join(load_dir, tag) if tag else None
        if path is None or not os.path.isfile(os.path.join(path, CKPT_FILE)):
            self.print(f"Warning: No checkpoint found at {load_dir}, skipping checkpoint loading.")
            return None, {}
        state = torch.load(os.path.join(path, CKPT_FILE), map_location="cpu", weights_only=False)
        self._unwrap_model(model).load_state_dict(state["module"], strict=load_module_strict)
        engine = self._engines.get(self._unwrap_model(model))
        if engine is not None and not load_module_only:
            if load_optimizer_states:
                engine["optimizer"].load_state_dict(state["optimizer"])
            if load_lr_scheduler_states:
                engine["scheduler"].load_state_dict(state["lr_scheduler"])
            engine["micro_steps"] = state["micro_steps"]
        return path, state["client_state"]

    def all_reduce(self, data, op="mean"):
        """One rank: the values themselves, with DeepspeedStrategy's types (a number comes back as a float)."""
        assert op in ("mean", "max", "sum")
        if isinstance(data, dict):
            return {k: self.all_reduce(v, op) for k, v in data.items()}
        return data if isinstance(data, torch.Tensor) else float(data)

    def all_gather(self, data):
        if isinstance(data, dict):
            return {k: self.all_gather(v) for k, v in data.items()}
        return torch.cat([data if isinstance(data, torch.Tensor) else torch.Tensor([data])])

    def print(self, *msg):
        print(*msg)

    def is_rank_0(self) -> bool:
        return True

    def get_rank(self) -> int:
        return 0

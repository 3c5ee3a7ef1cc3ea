"""What stands in for Ray (and, on CPU, for CUDA) when OpenRLHF's trainer runs in one process.

OpenRLHF's trainer modules call ``ray.get``, ``ray.put`` and ``ray.wait`` on the results of ``handle.method.remote()``.
Here a handle wraps a local object: ``.remote`` calls the method at once and returns a ``LocalRef`` of its result, or
of its coroutine (the rollout engine's ``generate_responses``), which ``ray.wait``/``ray.get`` then run all together
in one event loop, so that a rollout batch is generated as one batch.
"""

import asyncio
import contextlib
import inspect
import socket
from types import SimpleNamespace

import torch

# OpenRLHF modules that call ``ray.*`` on the trainer's path.
RAY_USING_MODULES = (
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.trainer.ppo_utils.experience_maker",
    "openrlhf.trainer.ppo_utils.samples_generator",
    "openrlhf.trainer.ray.launcher",
)
ACTOR_BUILDING_MODULES = ("openrlhf.trainer.ray.ppo_actor", "openrlhf.trainer.ray.launcher")


class LocalRef:
    def __init__(self, value):
        self.pending = inspect.iscoroutine(value)
        self.value = value

    def result(self):
        if self.pending:
            _run_together([self])
        return self.value


def _run_together(refs):
    pending = [r for r in refs if isinstance(r, LocalRef) and r.pending]
    if not pending:
        return

    async def gather():
        return await asyncio.gather(*(r.value for r in pending))

    for ref, value in zip(pending, asyncio.run(gather())):
        ref.value, ref.pending = value, False


class LocalRay:
    """The ``ray`` functions OpenRLHF's trainer modules use, for objects that live in this process."""

    @staticmethod
    def put(value):
        return value

    @staticmethod
    def get(refs, timeout=None):
        if isinstance(refs, (list, tuple)):
            _run_together(refs)
            return [LocalRay.get(r) for r in refs]
        return refs.result() if isinstance(refs, LocalRef) else refs

    @staticmethod
    def wait(refs, num_returns=1, timeout=None):
        _run_together(refs)
        return list(refs), []


class LocalActorHandle:
    """``handle.method.remote(*args, **kwargs)`` runs ``obj.method(*args, **kwargs)`` here."""

    def __init__(self, obj):
        self.obj = obj

    def __getattr__(self, name):
        method = getattr(self.obj, name)
        return SimpleNamespace(remote=lambda *args, **kwargs: LocalRef(method(*args, **kwargs)))


def local_actor_group(actor):
    """OpenRLHF's own ``RayActorGroup`` (its batching and chunking code) around one in-process actor."""
    from openrlhf.trainer.ray.launcher import RayActorGroup

    group = RayActorGroup.__new__(RayActorGroup)
    group._num_nodes, group._num_gpus_per_node, group.duplicate_actors = 1, 1, 1
    group.ray_actor_type, group._resources, group._num_resources_per_node = type(actor), None, None
    group._actor_handlers = [LocalActorHandle(actor)]
    return group


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _CpuAsCurrentDevice(str):
    """ "cpu" where OpenRLHF moves tensors to ``torch.cuda.current_device()``; formats as "0" where it only builds the
    name f"cuda:{...}" (the replay buffer's target device, which ``ppo_train`` never uses)."""

    def __format__(self, spec):
        return "0"


def _convert_to_torch_dtype_with_fp32(original):
    def convert(param_dtype):
        return torch.float32 if param_dtype == "fp32" else original(param_dtype)

    return convert


@contextlib.contextmanager
def one_process_openrlhf(device: str):
    """Within: OpenRLHF's trainer modules use ``LocalRay``; the actors are ``ResponseLogitsActor``s; a one-process
    gloo group exists (OpenRLHF's actors call ``torch.distributed.barrier``); on CPU,
    ``torch.cuda.current_device()`` answers "cpu" and ``torch.cuda.synchronize()`` does nothing;
    ``--ds.param_dtype fp32`` loads models in fp32. All undone on exit.
    """
    import importlib

    import openrlhf.utils.utils as openrlhf_utils

    from openrlhf_drirl.local.response_logits import ResponseLogitsActor

    patches = [(importlib.import_module(name), "ray", LocalRay) for name in RAY_USING_MODULES]
    # The policy and reference actors build OpenRLHF's Actor from these module globals.
    patches += [(importlib.import_module(name), "Actor", ResponseLogitsActor) for name in ACTOR_BUILDING_MODULES]
    patches.append(
        (
            openrlhf_utils,
            "convert_to_torch_dtype",
            _convert_to_torch_dtype_with_fp32(openrlhf_utils.convert_to_torch_dtype),
        )
    )
    if device == "cpu":
        cpu = _CpuAsCurrentDevice("cpu")
        patches += [(torch.cuda, "current_device", lambda: cpu), (torch.cuda, "synchronize", lambda *a: None)]
    originals = [(target, name, getattr(target, name)) for target, name, _ in patches]
    started_group = not torch.distributed.is_initialized()
    if started_group:
        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
        )
    for target, name, value in patches:
        setattr(target, name, value)
    try:
        yield
    finally:
        for target, name, value in originals:
            setattr(target, name, value)
        if started_group:
            torch.distributed.destroy_process_group()

"""The weight-sync group of OpenRLHF's ``--vllm.sync_with_ray --vllm.sync_backend gloo`` path, made to work beside
DeepSpeed's process group: ``use_standalone_gloo_groups()`` replaces Ray's ``TorchGLOOGroup`` (the class
``ray.util.collective`` builds for backend "gloo") with ``StandaloneGlooGroup``, and nothing else.

Why: Ray's ``TorchGLOOGroup`` (Ray 2.55) lives inside torch.distributed's default group. In a process that already
has one (the policy's rank 0, a DeepSpeed rank) it skips the rendezvous and calls ``dist.new_group(range(world_size))``
on DeepSpeed's group: a collective that the other policy ranks never join, so ``ActorPPOTrainer._init_vllm_sync_group``
hangs there (py-spy: ``new_group`` in ``TorchGLOOGroup.__init__``), and the engine never joins either. On GPUs this
path is NCCL (cupy), which has no such tie. ``StandaloneGlooGroup`` keeps Ray's rendezvous (rank 0 publishes an
address in Ray's internal KV) and builds its own ``ProcessGroupGloo`` on a TCPStore there, outside torch.distributed's
groups, so DeepSpeed's group is untouched. OpenRLHF's weight sync calls only ``init_collective_group`` and
``broadcast``; the other collectives are not offered.
"""

import datetime

DEFAULT_TIMEOUT_MS = 30000  # ray.util.collective's default gloo_timeout


def _group_class():
    import ray.experimental.internal_kv as internal_kv
    import torch.distributed as dist
    from ray.util.collective.collective_group.base_collective_group import BaseGroup
    from ray.util.collective.collective_group.torch_gloo_collective_group import (
        TorchGLOOGroup,
        get_master_address_metadata_key,
    )

    class StandaloneGlooGroup(TorchGLOOGroup):
        """Ray's gloo collective group on its own ``ProcessGroupGloo`` (not in torch.distributed's world)."""

        def __init__(self, world_size, rank, group_name, gloo_timeout=None):
            timeout = datetime.timedelta(milliseconds=gloo_timeout or DEFAULT_TIMEOUT_MS)
            self._rendezvous(group_name, rank, gloo_timeout)  # Ray's: rank 0 publishes a free address:port
            key = get_master_address_metadata_key(group_name)
            host, port = internal_kv._internal_kv_get(key).decode().rsplit(":", 1)
            # The master waits for all world_size ranks to connect, so the key can go: a group of the same name
            # made later (a resumed run on the same cluster) must not find this address.
            store = dist.TCPStore(host.strip("[]"), int(port), world_size, is_master=rank == 0, timeout=timeout)
            if rank == 0:
                internal_kv._internal_kv_del(key)
            BaseGroup.__init__(self, world_size, rank, group_name)
            self._is_default_group = False
            self._pg = dist.ProcessGroupGloo(
                dist.PrefixStore(f"drirl/{group_name}/", store), rank, world_size, timeout
            )
            self._store = store  # the group's connections go through it: keep it alive with the group
            self._gloo_context = None

        def broadcast(self, tensor, broadcast_options=None):
            from ray.util.collective.types import BroadcastOptions

            options = dist.BroadcastOptions()
            options.rootRank = (broadcast_options or BroadcastOptions()).root_rank
            self._pg.broadcast([self._check_tensor_input(tensor)], options).wait()

        def barrier(self, barrier_options=None):
            self._pg.barrier().wait()

        def destroy_group(self):
            self._pg, self._store = None, None

        def _not_offered(self, *args, **kwargs):
            raise NotImplementedError("StandaloneGlooGroup offers broadcast and barrier (OpenRLHF's weight sync)")

        allreduce = reduce = allgather = reducescatter = send = recv = _not_offered

    return StandaloneGlooGroup


def use_standalone_gloo_groups() -> None:
    """Make ``ray.util.collective`` build ``StandaloneGlooGroup`` for backend "gloo" in this process (idempotent).
    Every member of a group must call it (the policy's rank 0 and the rollout engines)."""
    import importlib

    collective = importlib.import_module("ray.util.collective.collective")  # the module, not the package's names
    if getattr(collective.TorchGLOOGroup, "__drirl_standalone__", False):
        return
    group_class = _group_class()
    group_class.__drirl_standalone__ = True
    collective.TorchGLOOGroup = group_class

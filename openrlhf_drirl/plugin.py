"""Install openrlhf_drirl into OpenRLHF in the current process.

An OpenRLHF with an advantage-estimator registry (``openrlhf.trainer.ppo_utils.advantage_estimators``, the change
proposed in upstream/) gets the registered estimators put into it, and its own experience maker runs them. OpenRLHF
0.11.2 has none: there OpenRLHF builds its experience maker inside a Ray actor (the PPO trainer), from the module
global ``openrlhf.trainer.ppo_trainer.RemoteExperienceMaker``, and ``register()`` replaces that global with
``DRIRLExperienceMaker``. On both, OpenRLHF checkpoints are made to carry the estimators' state. It is lazy: if
``openrlhf.trainer.ppo_trainer`` is not imported yet, a post-import hook patches it when it is, so the Ray
``worker_process_setup_hook`` that calls ``register()`` costs nothing in vLLM workers (OpenRLHF keeps deepspeed out of
those). Idempotent.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

PPO_TRAINER_MODULE = "openrlhf.trainer.ppo_trainer"
OPENRLHF_ESTIMATORS_MODULE = "openrlhf.trainer.ppo_utils.advantage_estimators"
CHECKPOINT_STATE_KEY = "drirl_advantage_state"
# Set by the Ray launcher in the workers' env_vars: the estimator modules to import, and the user's own setup hook.
ESTIMATOR_MODULES_ENV = "DRIRL_ESTIMATOR_MODULES"
CHAINED_SETUP_HOOK_ENV = "DRIRL_CHAINED_SETUP_HOOK"
# Set by the Ray launcher's --drirl.cpu: the workers run OpenRLHF's Ray actors on CPU ranks.
CPU_WORKER_ENV = "DRIRL_CPU_WORKER"


def openrlhf_estimator_registry():
    """OpenRLHF's advantage-estimator registry module, or None where OpenRLHF has none (0.11.2). A feature test, not a
    version check: a patched or newer OpenRLHF has the registry whatever its version string says."""
    # Look for the module before importing it: importing openrlhf.trainer.ppo_utils takes seconds, and register()
    # runs in every Ray worker's setup hook.
    openrlhf = importlib.util.find_spec("openrlhf")
    folders = [
        os.path.join(p, "trainer", "ppo_utils") for p in (openrlhf and openrlhf.submodule_search_locations or [])
    ]
    if importlib.machinery.PathFinder.find_spec("advantage_estimators", folders) is None:
        return None
    module = importlib.import_module(OPENRLHF_ESTIMATORS_MODULE)
    return module if callable(getattr(module, "register_advantage_estimator", None)) else None


def _register_into_openrlhf(registry) -> None:
    import openrlhf_drirl.advantage  # noqa: F401  (registers GRPO-S)
    from openrlhf_drirl.advantage.registry import ADVANTAGE_ESTIMATORS

    for name, estimator in ADVANTAGE_ESTIMATORS.items():
        existing = registry.ADVANTAGE_ESTIMATORS.get(name)
        if existing is not None and existing.fn is estimator.fn:
            continue
        # Ours replaces an OpenRLHF estimator of the same name: upstream's grpo_s lacks the --drirl.* options (the
        # category labels, the reference, the clamp) and the drirl_* extra_logs keys that this package's recipes use.
        registry.ADVANTAGE_ESTIMATORS.pop(name, None)
        registry.register_advantage_estimator(
            name, estimator.fn, needs_group=estimator.needs_group, add_arguments=estimator.add_arguments
        )


def _patch_ppo_trainer(module) -> None:
    if getattr(module, "_drirl_installed", False):
        return
    if openrlhf_estimator_registry() is None:
        import openrlhf_drirl.advantage  # noqa: F401  (registers GRPO-S)
        from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker

        module.RemoteExperienceMaker = DRIRLExperienceMaker
    trainer_class = module.BasePPOTrainer
    save_logs_and_checkpoints = trainer_class.save_logs_and_checkpoints
    init_checkpoint_states = trainer_class.init_checkpoint_states

    # client_states travel with the actor checkpoint and come back from get_checkpoint_states on resume.
    def save_with_advantage_state(self, global_step, logs_dict=None, client_states=None):
        client_states = dict(client_states or {})
        client_states[CHECKPOINT_STATE_KEY] = getattr(self.experience_maker, "advantage_state", {})
        return save_logs_and_checkpoints(self, global_step, logs_dict, client_states)

    def init_with_advantage_state(self):
        states = init_checkpoint_states(self)
        if CHECKPOINT_STATE_KEY in states:
            # OpenRLHF's own experience maker (registry path) creates advantage_state on first use: create it here.
            vars(self.experience_maker).setdefault("advantage_state", {}).update(states[CHECKPOINT_STATE_KEY])
        return states

    trainer_class.save_logs_and_checkpoints = save_with_advantage_state
    trainer_class.init_checkpoint_states = init_with_advantage_state
    # @ray.remote copied BasePPOTrainer's methods into PPOTrainer's actor class (Ray's tracing wrappers) when the
    # module ran, before this patch, so the trainer actor would run the unpatched ones (no estimator state in its
    # checkpoints): decorate the class again, which wraps the patched methods.
    actor_class = getattr(module.PPOTrainer, "__ray_actor_class__", None)
    if actor_class is not None:
        import ray

        module.PPOTrainer = ray.remote(actor_class)
    module._drirl_installed = True


class _PatchAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``openrlhf.trainer.ppo_trainer`` with the other finders, then patches it right after it executes."""

    def find_spec(self, name, path=None, target=None):
        if name != PPO_TRAINER_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None:
            return None
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _patch_ppo_trainer(module)


def register() -> None:
    """Install the plugin in this process (Ray ``worker_process_setup_hook`` entry point too). Idempotent.

    Call it after importing the estimator modules: with OpenRLHF's registry, the estimators registered by then are
    the ones put into it."""
    registry = openrlhf_estimator_registry()
    if registry is not None:
        _register_into_openrlhf(registry)
    if PPO_TRAINER_MODULE in sys.modules:
        _patch_ppo_trainer(sys.modules[PPO_TRAINER_MODULE])
    elif not any(isinstance(finder, _PatchAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


def setup_cpu_ray_worker() -> None:
    """A Ray worker of a cluster without GPUs (``--drirl.cpu``): OpenRLHF's DeepSpeed ranks on CPU (gloo, the CUDA
    calls OpenRLHF hard-codes redirected) and the weight-sync group beside DeepSpeed's (``gloo_sync_group``)."""
    from openrlhf_drirl.local.gloo_sync_group import use_standalone_gloo_groups
    from openrlhf_drirl.training.cpu_deepspeed import use_cpu_for_deepspeed

    use_cpu_for_deepspeed()
    use_standalone_gloo_groups()


def setup_ray_worker(chained_hook=None) -> None:
    """Ray ``worker_process_setup_hook`` set by ``openrlhf_drirl.cli.train_ppo_ray``: ``register()``, import the
    estimator modules the launcher was given (and the entry points), set up CPU ranks under ``--drirl.cpu``
    (``setup_cpu_ray_worker``), then run the user's own setup hook, if any (a callable bound by the launcher, or a
    ``module.function`` name in ``DRIRL_CHAINED_SETUP_HOOK``)."""
    from openrlhf_drirl.advantage.registry import import_estimator_modules

    import_estimator_modules(os.environ.get(ESTIMATOR_MODULES_ENV, "").split(","))
    register()
    if os.environ.get(CPU_WORKER_ENV) == "1":
        setup_cpu_ray_worker()
    if chained_hook is None and os.environ.get(CHAINED_SETUP_HOOK_ENV):
        module, _, name = os.environ[CHAINED_SETUP_HOOK_ENV].rpartition(".")
        chained_hook = getattr(importlib.import_module(module), name)
    if chained_hook is not None:
        chained_hook()

"""Install openrlhf_drirl into OpenRLHF in the current process.

OpenRLHF builds its experience maker inside a Ray actor (the PPO trainer), from the module global
``openrlhf.trainer.ppo_trainer.RemoteExperienceMaker``. ``register()`` replaces that global with
``DRIRLExperienceMaker`` and makes OpenRLHF checkpoints carry the estimators' state. It is lazy: if
``openrlhf.trainer.ppo_trainer`` is not imported yet, a post-import hook patches it when it is, so the Ray
``worker_process_setup_hook`` that calls ``register()`` costs nothing in vLLM workers (OpenRLHF keeps deepspeed out of
those). Idempotent.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

PPO_TRAINER_MODULE = "openrlhf.trainer.ppo_trainer"
CHECKPOINT_STATE_KEY = "drirl_advantage_state"
# Set by the Ray launcher in the workers' env_vars: the estimator modules to import, and the user's own setup hook.
ESTIMATOR_MODULES_ENV = "DRIRL_ESTIMATOR_MODULES"
CHAINED_SETUP_HOOK_ENV = "DRIRL_CHAINED_SETUP_HOOK"


def _patch_ppo_trainer(module) -> None:
    if getattr(module, "_drirl_installed", False):
        return
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
        if CHECKPOINT_STATE_KEY in states and hasattr(self.experience_maker, "advantage_state"):
            self.experience_maker.advantage_state.update(states[CHECKPOINT_STATE_KEY])
        return states

    trainer_class.save_logs_and_checkpoints = save_with_advantage_state
    trainer_class.init_checkpoint_states = init_with_advantage_state
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
    """Install the plugin in this process (Ray ``worker_process_setup_hook`` entry point too). Idempotent."""
    if PPO_TRAINER_MODULE in sys.modules:
        _patch_ppo_trainer(sys.modules[PPO_TRAINER_MODULE])
    elif not any(isinstance(finder, _PatchAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())


def setup_ray_worker(chained_hook=None) -> None:
    """Ray ``worker_process_setup_hook`` set by ``openrlhf_drirl.cli.train_ppo_ray``: ``register()``, import the
    estimator modules the launcher was given (and the entry points), then run the user's own setup hook, if any (a
    callable bound by the launcher, or a ``module.function`` name in ``DRIRL_CHAINED_SETUP_HOOK``)."""
    from openrlhf_drirl.advantage.registry import import_estimator_modules

    register()
    import_estimator_modules(os.environ.get(ESTIMATOR_MODULES_ENV, "").split(","))
    if chained_hook is None and os.environ.get(CHAINED_SETUP_HOOK_ENV):
        module, _, name = os.environ[CHAINED_SETUP_HOOK_ENV].rpartition(".")
        chained_hook = getattr(importlib.import_module(module), name)
    if chained_hook is not None:
        chained_hook()

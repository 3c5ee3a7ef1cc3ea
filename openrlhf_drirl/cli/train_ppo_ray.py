"""``python -m openrlhf_drirl.cli.train_ppo_ray``: OpenRLHF's ``train_ppo_ray`` with openrlhf_drirl installed.

Takes every flag of ``python -m openrlhf.cli.train_ppo_ray``, plus the registered estimators as values of
``--algo.advantage.estimator`` and their own flags (``--drirl.*`` for GRPO-S), then runs OpenRLHF's own ``__main__``:
its argument checks and ``train()``. Around it:
- the plugin is registered in this process, and in every Ray worker through Ray's ``worker_process_setup_hook``
  (patching only the driver does nothing: the experience maker runs inside the PPO trainer's Ray actor);
- a registered group estimator is checked as OpenRLHF checks group_norm (n_samples_per_prompt > 1); OpenRLHF
  already drops the critic for every estimator but gae.
"""

import argparse
import contextlib
import runpy

import ray

from openrlhf_drirl import register
from openrlhf_drirl.advantage import ADVANTAGE_ESTIMATORS

ESTIMATOR_FLAG = "--algo.advantage.estimator"
RAY_WORKER_SETUP_HOOK = "openrlhf_drirl.register"


def _extend_parser(parser: argparse.ArgumentParser) -> None:
    estimator_action = parser._option_string_actions[ESTIMATOR_FLAG]
    estimator_action.choices = list(estimator_action.choices) + sorted(ADVANTAGE_ESTIMATORS)
    estimator_action.help += f"; openrlhf_drirl adds: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}"
    added = set()
    for estimator in ADVANTAGE_ESTIMATORS.values():
        if estimator.add_arguments is not None and estimator.add_arguments not in added:
            estimator.add_arguments(parser)
            added.add(estimator.add_arguments)


def _check_estimator_args(parser: argparse.ArgumentParser, flat_args: argparse.Namespace) -> None:
    from openrlhf.utils.config import hierarchize

    estimator = ADVANTAGE_ESTIMATORS.get(getattr(flat_args, "algo.advantage.estimator"))
    if estimator is None:
        return
    n = getattr(flat_args, "rollout.n_samples_per_prompt")
    if estimator.needs_group and n <= 1:
        parser.error(
            f"{ESTIMATOR_FLAG} {estimator.name} normalises rewards within each prompt's group: set "
            f"--rollout.n_samples_per_prompt > 1 (got {n}; 8 is usual)"
        )
    if estimator.check_args is not None:
        try:
            estimator.check_args(hierarchize(argparse.Namespace(**vars(flat_args))))
        except ValueError as e:
            parser.error(str(e))


@contextlib.contextmanager
def openrlhf_with_plugin():
    """Within: OpenRLHF's train_ppo_ray parser knows the registered estimators, and ``ray.init`` installs the plugin
    in every worker process (merged into the runtime_env OpenRLHF passes, so its env vars are kept)."""
    original_parse_args = argparse.ArgumentParser.parse_args
    original_ray_init = ray.init

    def parse_args(parser, args=None, namespace=None):
        if ESTIMATOR_FLAG not in parser._option_string_actions:
            return original_parse_args(parser, args, namespace)
        _extend_parser(parser)
        flat_args = original_parse_args(parser, args, namespace)
        _check_estimator_args(parser, flat_args)
        return flat_args

    def ray_init(*args, runtime_env=None, **kwargs):
        runtime_env = dict(runtime_env or {})
        hook = runtime_env.setdefault("worker_process_setup_hook", RAY_WORKER_SETUP_HOOK)
        if hook != RAY_WORKER_SETUP_HOOK:
            raise ValueError(
                f"runtime_env already sets worker_process_setup_hook={hook!r}; openrlhf_drirl needs "
                f"{RAY_WORKER_SETUP_HOOK!r}: call both from one function of yours and run openrlhf.cli.train_ppo_ray"
            )
        return original_ray_init(*args, runtime_env=runtime_env, **kwargs)

    argparse.ArgumentParser.parse_args = parse_args
    ray.init = ray_init
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original_parse_args
        ray.init = original_ray_init


def main() -> None:
    register()
    with openrlhf_with_plugin():
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

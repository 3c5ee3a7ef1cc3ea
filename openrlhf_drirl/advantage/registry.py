"""A name registry of advantage estimators for OpenRLHF (OpenRLHF has none; verl's ``register_adv_est`` is the model).

An estimator turns one rollout batch of scalar rewards into shaped scalar rewards, before OpenRLHF clips them, adds
the KL term and forms returns (``RemoteExperienceMaker.compute_advantages_and_returns``). Unlike verl's, it receives
the per-sample metadata too: the dataset labels and the ``experience.info`` tensors (the reward function's
``extra_logs``), both in rollout order, where sample ``g * n + i`` is the ``i``-th of prompt group ``g``.

Signature of a registered function::

    fn(rewards, labels, info, args, state) -> (shaped_rewards, metrics)

    rewards  float32 (P, n): P prompt groups of n samples, after OpenRLHF's length penalties
    labels   list of P * n dataset labels (``--data.label_key`` values)
    info     dict of float32 (P * n,) tensors: every per-sample ``experience.info`` key
    args     OpenRLHF's hierarchized args (``args.rollout.n_samples_per_prompt``, ``args.drirl...``)
    state    a dict the estimator may keep across steps; saved with OpenRLHF checkpoints (JSON-serialisable values)
    shaped_rewards  float32 (P, n)
    metrics  dict of name -> (P * n,) per-sample tensor or scalar; added to ``experience.info``, which OpenRLHF logs
"""

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Dict, Iterable, List, Optional

# Installed packages list their estimator modules under this entry-point group, e.g. in pyproject.toml:
#   [project.entry-points."openrlhf_drirl.advantage_estimators"]
#   my_estimator = "my_package.my_estimator"
ENTRY_POINT_GROUP = "openrlhf_drirl.advantage_estimators"


@dataclass(frozen=True)
class AdvantageEstimator:
    name: str
    fn: Callable
    # A group baseline needs n_samples_per_prompt > 1 and no critic; with n = 1 every advantage would be 0.
    needs_group: bool = True
    # Adds the estimator's own ``--<namespace>.*`` flags to OpenRLHF's parser (the launcher calls it once).
    add_arguments: Optional[Callable] = None
    # Checks the hierarchized args at launch; raises ValueError with the flag and the fix.
    check_args: Optional[Callable] = None


ADVANTAGE_ESTIMATORS: Dict[str, AdvantageEstimator] = {}


def register_advantage_estimator(
    name: str,
    *,
    needs_group: bool = True,
    add_arguments: Optional[Callable] = None,
    check_args: Optional[Callable] = None,
):
    """Decorator: register ``fn`` as the advantage estimator ``name`` (selected by ``--algo.advantage.estimator``).

    The launcher refuses a name that OpenRLHF's parser already offers: OpenRLHF's own estimators never reach here.
    """

    def decorator(fn):
        existing = ADVANTAGE_ESTIMATORS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered by {existing.fn.__module__}")
        ADVANTAGE_ESTIMATORS[name] = AdvantageEstimator(name, fn, needs_group, add_arguments, check_args)
        return fn

    return decorator


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator {name!r}: registered ones are {sorted(ADVANTAGE_ESTIMATORS)}; import the "
            "module that registers it (--drirl.estimator_modules MOD, or the entry-point group "
            f"{ENTRY_POINT_GROUP!r} of an installed package)"
        ) from None


def import_estimator_modules(modules: Iterable[str] = ()) -> List[str]:
    """Import ``modules`` and every module of the entry-point group, so their estimators register; returns the
    module names imported. A module that fails to import raises ``ImportError`` naming it and how to fix it."""
    names = [m.strip() for m in modules if m and m.strip()]
    for module in names:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(
                f"--drirl.estimator_modules: cannot import {module!r} ({e}): put it on PYTHONPATH or install it"
            ) from e
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except ImportError as e:
            raise ImportError(
                f"entry point {entry_point.name!r} = {entry_point.value!r} of group {ENTRY_POINT_GROUP!r} (package "
                f"{entry_point.dist.name if entry_point.dist else '?'}) does not import: {e}"
            ) from e
        names.append(entry_point.module)
    return names

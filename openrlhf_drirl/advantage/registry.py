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

from dataclasses import dataclass
from typing import Callable, Dict, Optional

# OpenRLHF 0.11.2's own estimators (``--algo.advantage.estimator`` choices); their code path is never touched.
OPENRLHF_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce")


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
    """Decorator: register ``fn`` as the advantage estimator ``name`` (selected by ``--algo.advantage.estimator``)."""

    def decorator(fn):
        if name in OPENRLHF_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is built into OpenRLHF: register under another name")
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
            f"unknown advantage estimator {name!r}: registered ones are {sorted(ADVANTAGE_ESTIMATORS)}, OpenRLHF's "
            f"are {list(OPENRLHF_ESTIMATORS)}"
        ) from None

"""Advantage estimators for OpenRLHF: a name registry, GRPO-S and a negative control (importing this package registers
both)."""

from openrlhf_drirl.advantage import controls, grpo_s  # noqa: F401  (register "grpo_shuffled_control", "grpo_s")
from openrlhf_drirl.advantage.registry import (
    ADVANTAGE_ESTIMATORS,
    ENTRY_POINT_GROUP,
    AdvantageEstimator,
    get_advantage_estimator,
    import_estimator_modules,
    register_advantage_estimator,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ENTRY_POINT_GROUP",
    "AdvantageEstimator",
    "get_advantage_estimator",
    "import_estimator_modules",
    "register_advantage_estimator",
]

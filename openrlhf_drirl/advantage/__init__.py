"""Advantage estimators for OpenRLHF: a name registry and GRPO-S (importing this package registers GRPO-S)."""

from openrlhf_drirl.advantage import grpo_s  # noqa: F401  (registers "grpo_s")
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

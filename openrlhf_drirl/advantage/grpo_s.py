"""GRPO-S: GRPO with dynamic reward scaling (DR-IRL, arXiv 2503.18991, section 4; design.md).

For a rollout batch with groups of n samples per prompt q, sample i of category c (j in the paper):

    z_i   = (r_i - mean_group(r)) / (std_group(r) + 1e-9)           OpenRLHF's group_norm, unchanged
    δ_i   = 1 - W_i                                                  W_i: ``info["drirl_similarity"]``
    α^D_i = σ(δ_i) / σ(δ̄_c)                                          δ̄_c: mean of δ over category c's samples
    g_i   = R_c(q, o_i) - R_c(q, õ)                                  ``info["drirl_reward_gap"]``
    m_c, s_c = mean and population std of g over category c;  τ = (k · s_c)²  (k = 1.5)
    M_i   = 1[(g_i - m_c)² <= τ]                                     outlier filter; s_c = 0 keeps all
    α^M_c = σ(mean of g_i over M_i = 1) / σ(m_c)
    α_i   = α^D_i · α^M_c                                            product, the paper's choice over a sum
    r̃_i   = α_i · z_i                                                replaces z_i before OpenRLHF adds the KL term

Why category means (not group means) by default: R_c is category c's reward model, so c is the index of the means;
a group mean would make α^D only reorder samples inside a group and hide which prompts are hard.
Options (``--drirl.*``): the means over the prompt group or as a per-category running average (EMA, kept in the
estimator state that is saved with OpenRLHF checkpoints); α^D only or α^M only; a clamp on α.
"""

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch

from openrlhf_drirl.advantage.registry import register_advantage_estimator
from openrlhf_drirl.contract import REWARD_GAP_KEY, SIMILARITY_KEY, category_ids, parse_categories

_REWARD_FUNC_HINT = (
    "the reward function must return it per sample in extra_logs (openrlhf_drirl.cli.serve_category_rm and "
    f"openrlhf_drirl/reward/reward_func.py do; a custom reward function must return both {SIMILARITY_KEY!r} and "
    f"{REWARD_GAP_KEY!r})"
)


@dataclass(frozen=True)
class GRPOSConfig:
    categories: Tuple[str, ...]
    hardness_terms: str = "both"  # both | data (α^D only) | model (α^M only)
    reference: str = "batch"  # batch | group | ema: what δ̄ and m average over
    ema_decay: float = 0.9
    outlier_k: float = 1.5
    alpha_clip: Optional[Tuple[float, float]] = None

    @classmethod
    def from_args(cls, args) -> "GRPOSConfig":
        """Read ``args.drirl`` (absent fields take the defaults) and check every value."""
        drirl = getattr(args, "drirl", None)

        def get(name, default):
            value = getattr(drirl, name, None)
            return default if value is None else value

        config = cls(
            categories=parse_categories(get("categories", None)),
            hardness_terms=get("hardness_terms", "both"),
            reference=get("reference", "batch"),
            ema_decay=float(get("ema_decay", 0.9)),
            outlier_k=float(get("outlier_k", 1.5)),
            alpha_clip=tuple(get("alpha_clip", ())) or None,
        )
        if config.hardness_terms not in ("both", "data", "model"):
            raise ValueError(f"--drirl.hardness_terms is {config.hardness_terms!r}: use both, data or model")
        if config.reference not in ("batch", "group", "ema"):
            raise ValueError(f"--drirl.reference is {config.reference!r}: use batch, group or ema")
        if not 0.0 <= config.ema_decay < 1.0:
            raise ValueError(f"--drirl.ema_decay is {config.ema_decay}: use a value in [0, 1), e.g. 0.9")
        if not (config.outlier_k > 0 and math.isfinite(config.outlier_k)):
            raise ValueError(f"--drirl.outlier_k is {config.outlier_k}: use a positive number of std, e.g. 1.5")
        if config.alpha_clip is not None:
            low, high = config.alpha_clip
            if not (len(config.alpha_clip) == 2 and 0 <= low < high):
                raise ValueError(f"--drirl.alpha_clip is {config.alpha_clip}: use LOW HIGH with 0 <= LOW < HIGH")
        return config


def add_grpo_s_arguments(parser) -> None:
    """GRPO-S flags, added to OpenRLHF's train_ppo_ray parser by ``openrlhf_drirl.cli.train_ppo_ray``."""
    group = parser.add_argument_group("GRPO-S (openrlhf_drirl)")
    group.add_argument(
        "--drirl.categories",
        type=str,
        default=None,
        help="comma-separated category names of the labels' 'category' field (default: the seven of design.md)",
    )
    group.add_argument(
        "--drirl.hardness_terms",
        choices=["both", "data", "model"],
        default="both",
        help="α = α^D·α^M (both), α^D only (data) or α^M only (model)",
    )
    group.add_argument(
        "--drirl.reference",
        choices=["batch", "group", "ema"],
        default="batch",
        help="δ̄ and mean gap over the category's samples in the batch, over the prompt group, or a per-category "
        "running average (EMA, saved with checkpoints)",
    )
    group.add_argument("--drirl.ema_decay", type=float, default=0.9, help="EMA decay for --drirl.reference ema")
    group.add_argument(
        "--drirl.outlier_k", type=float, default=1.5, help="reward-gap outlier filter: keep (g - m)^2 <= (k·std)^2"
    )
    group.add_argument(
        "--drirl.alpha_clip", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"), help="clamp α to [LOW, HIGH]"
    )


def group_normalized_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """z = (r - mean_group) / (std_group + 1e-9) over the last dim; exactly OpenRLHF's group_norm (unbiased std)."""
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + 1e-9)


def segment_sum(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    return torch.zeros(num_segments, dtype=values.dtype).index_add_(0, segment_ids, values)


def segment_mean(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Mean of ``values`` per segment id; segments with no sample get 0 (they are never gathered)."""
    counts = segment_sum(torch.ones_like(values), segment_ids, num_segments)
    return segment_sum(values, segment_ids, num_segments) / counts.clamp(min=1)


def data_hardness_scale(
    similarity: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int,
    mean_dissimilarity: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """α^D_i = σ(δ_i) / σ(δ̄_s), δ_i = 1 - W_i, δ̄_s the mean δ of sample i's segment (or the given reference).

    Returns (α^D per sample, δ̄ per segment). A response far from its demonstration (large δ) gets α^D > 1.
    """
    dissimilarity = 1.0 - similarity
    if mean_dissimilarity is None:
        mean_dissimilarity = segment_mean(dissimilarity, segment_ids, num_segments)
    return torch.sigmoid(dissimilarity) / torch.sigmoid(mean_dissimilarity[segment_ids]), mean_dissimilarity


def model_responsiveness_scale(
    reward_gap: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int,
    outlier_k: float = 1.5,
    mean_reward_gap: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """α^M_s = σ(mean of the kept g) / σ(m_s), kept: (g - m_s)² <= (k·s_s)², s_s the population std of g in segment s.

    ``mean_reward_gap`` replaces m_s (the EMA option); s_s stays the batch dispersion. With the batch mean the
    sample nearest m_s is always kept; with a reference mean a segment could lose every sample, and then keeps all.
    Returns (α^M per segment, kept mask per sample).
    """
    batch_mean = segment_mean(reward_gap, segment_ids, num_segments)
    center = batch_mean if mean_reward_gap is None else mean_reward_gap
    variance = segment_mean((reward_gap - batch_mean[segment_ids]) ** 2, segment_ids, num_segments)
    tau = (outlier_k**2) * variance
    # s = 0 (all gaps equal) keeps all, whatever the rounding of the mean.
    kept = ((reward_gap - center[segment_ids]) ** 2 <= tau[segment_ids]) | (variance[segment_ids] == 0)
    kept_counts = segment_sum(kept.to(reward_gap.dtype), segment_ids, num_segments)
    kept = kept | (kept_counts[segment_ids] == 0)
    kept_mean = segment_sum(reward_gap * kept, segment_ids, num_segments) / segment_sum(
        kept.to(reward_gap.dtype), segment_ids, num_segments
    ).clamp(min=1)
    return torch.sigmoid(kept_mean) / torch.sigmoid(center), kept


def _per_sample_info(info: Dict[str, torch.Tensor], key: str, num_samples: int, disable_hint: str) -> torch.Tensor:
    if key not in info:
        raise KeyError(
            f"GRPO-S needs experience.info[{key!r}] but the rollout has only {sorted(info)}: {_REWARD_FUNC_HINT}; "
            f"or {disable_hint}"
        )
    values = info[key].float()
    bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"{key} is NaN or inf for samples {bad[:10]} (rollout order) of {num_samples}: fix the reward function "
            "that returned them"
        )
    return values


def _ema_update(state: dict, name: str, batch_means: torch.Tensor, present: Sequence[str], decay: float, categories):
    """Running per-category mean, updated with this batch's mean before use (the first batch gives the batch mean)."""
    running = state.setdefault(name, {})
    for c in present:
        batch_value = float(batch_means[categories.index(c)])
        running[c] = batch_value if c not in running else decay * running[c] + (1 - decay) * batch_value
    return torch.tensor([running.get(c, 0.0) for c in categories], dtype=batch_means.dtype)


def check_grpo_s_args(args) -> None:
    """Launch-time checks: valid ``--drirl.*`` values, and a reward function that can return the drirl_* keys."""
    config = GRPOSConfig.from_args(args)
    if not (args.reward.remote_url or args.train.agent_func_path):
        raise ValueError(
            "GRPO-S reads drirl_similarity and drirl_reward_gap from the reward function's extra_logs, which OpenRLHF "
            "only passes through a reward function: set --reward.remote_url to openrlhf_drirl/reward/reward_func.py "
            "or to a serve_category_rm URL (or --train.agent_func_path to an agent that returns them)"
        )


@register_advantage_estimator(
    "grpo_s", needs_group=True, add_arguments=add_grpo_s_arguments, check_args=check_grpo_s_args
)
def grpo_s_rewards(rewards: torch.Tensor, labels: list, info: Dict[str, torch.Tensor], args, state: dict):
    """GRPO-S shaped rewards α_i · z_i for a (P, n) rollout batch; see the module docstring for the formulas."""
    config = GRPOSConfig.from_args(args)
    num_groups, n = rewards.shape
    num_samples = num_groups * n
    categories = list(config.categories)
    # A group's n samples answer one prompt and carry its label: one parse per group (the hot part at 8k samples).
    category = torch.tensor(category_ids(labels, categories, stride=n), dtype=torch.long).repeat_interleave(n)
    present = [c for i, c in enumerate(categories) if bool((category == i).any())]
    if config.reference == "group":
        segment, num_segments = torch.arange(num_groups).repeat_interleave(n), num_groups
    else:
        segment, num_segments = category, len(categories)

    z = group_normalized_rewards(rewards).reshape(-1)
    alpha_data = torch.ones(num_samples)
    alpha_model = torch.ones(num_samples)
    metrics = {}
    if config.hardness_terms in ("both", "data"):
        similarity = _per_sample_info(info, SIMILARITY_KEY, num_samples, "use --drirl.hardness_terms model")
        if bool(((similarity < -1 - 1e-4) | (similarity > 1 + 1e-4)).any()):
            raise ValueError(
                f"{SIMILARITY_KEY} must be a cosine similarity in [-1, 1], got values in "
                f"[{similarity.min():.4g}, {similarity.max():.4g}]: fix the reward function's similarity"
            )
        reference = None
        if config.reference == "ema":
            batch_means = segment_mean(1.0 - similarity, segment, num_segments)
            reference = _ema_update(
                state, "ema_mean_dissimilarity", batch_means, present, config.ema_decay, categories
            )
        alpha_data, _ = data_hardness_scale(similarity, segment, num_segments, reference)
    if config.hardness_terms in ("both", "model"):
        gap = _per_sample_info(info, REWARD_GAP_KEY, num_samples, "use --drirl.hardness_terms data")
        reference = None
        if config.reference == "ema":
            batch_means = segment_mean(gap, segment, num_segments)
            reference = _ema_update(state, "ema_mean_reward_gap", batch_means, present, config.ema_decay, categories)
        alpha_model_segment, kept = model_responsiveness_scale(gap, segment, num_segments, config.outlier_k, reference)
        alpha_model = alpha_model_segment[segment]
        metrics["drirl/reward_gap_outlier_frac"] = 1.0 - kept.float().mean()

    alpha = alpha_data * alpha_model
    if config.alpha_clip is not None:
        alpha = alpha.clamp(*config.alpha_clip)

    # design.md's log: mean/min/max of α^D and α, α^M and mean reward per category (and mean α^D per category,
    # which shows which categories are hard). Each metric costs a tensor per micro-batch, so no more than these.
    metrics.update({"drirl/alpha": alpha, "drirl/alpha_D": alpha_data, "drirl/alpha_M": alpha_model})
    for name, values in (("alpha", alpha), ("alpha_D", alpha_data)):
        metrics[f"drirl/{name}_min"], metrics[f"drirl/{name}_max"] = values.min(), values.max()
    flat_rewards = rewards.reshape(-1)
    for c in present:
        in_category = category == categories.index(c)
        metrics[f"drirl/reward_mean/{c}"] = flat_rewards[in_category].mean()
        metrics[f"drirl/alpha_M/{c}"] = alpha_model[in_category].mean()
        metrics[f"drirl/alpha_D_mean/{c}"] = alpha_data[in_category].mean()
    return (alpha * z).reshape(num_groups, n), metrics

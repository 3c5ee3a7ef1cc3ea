"""GRPO-S: GRPO with dynamic reward scaling (DR-IRL, arXiv 2503.18991, section 4; docs/method.md).

For a rollout batch with groups of n samples per prompt q, sample i of category c (j in the paper):

    z_i   = (r_i - mean_group(r)) / (std_group(r) + 1e-9)           OpenRLHF's group_norm, unchanged
    z_i   = r_i - mean_group(r)                                      with --algo.advantage.no_std_norm (dr_grpo's)
    δ_i   = 1 - W_i                                                  W_i: ``info["drirl_similarity"]``
    α^D_i = σ(δ_i) / σ(δ̄_c)                                          δ̄_c: mean of δ over category c's samples
    g_i   = R_c(q, o_i) - R_c(q, õ)                                  ``info["drirl_reward_gap"]``
    m_c, s_c = mean and population std of g over category c;  τ = (k · s_c)²  (k = 1.5)
    M_i   = 1[(g_i - m_c)² <= τ]                                     outlier filter; s_c = 0 keeps all
    α^M_c = σ(mean of g_i over M_i = 1) / σ(m_c)
    α_i   = α^D_i · α^M_c                                            product, the paper's choice over a sum
    α_i  <- α_i ^ p                                                  p: --drirl.alpha_exponent, 1 (off) by default
    r̃_i   = α_i · z_i                                                replaces z_i before OpenRLHF adds the KL term

Why category means (not group means) by default: R_c is category c's reward model, so c is the index of the means;
a group mean would make α^D only reorder samples inside a group and hide which prompts are hard.
Options (``--drirl.*``): the means over the prompt group or as a per-category running average (EMA, kept in the
estimator state that is saved with OpenRLHF checkpoints); α^D only or α^M only; a clamp on α; and a sharpening
exponent p, not in the paper: the sigmoid ratios keep α within a few percent of 1 when δ and the gaps vary little
(0.93-1.05 on the CPU main job), and α^p spreads it (p = 10 gives about 0.5-1.6 there) without moving α = 1.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import torch

from openrlhf_drirl.advantage.registry import register_advantage_estimator
from openrlhf_drirl.config_flags import add_config_arguments, config_from_args
from openrlhf_drirl.contract import (
    DEFAULT_CATEGORIES,
    REWARD_GAP_KEY,
    SIMILARITY_KEY,
    category_ids,
    parse_categories,
)

# e^80 ≈ 5.5e34: the largest (and 1 / the smallest) scale sigmoid_ratio returns.
MAX_LOG_SCALE = 80.0

_REWARD_FUNC_HINT = (
    "the reward function must return it per sample in extra_logs (openrlhf_drirl.cli.serve_category_rm and "
    f"openrlhf_drirl/reward/reward_func.py do; a custom reward function must return both {SIMILARITY_KEY!r} and "
    f"{REWARD_GAP_KEY!r})"
)


@dataclass(frozen=True)
class GRPOSConfig:
    """GRPO-S options: the single source of the ``--drirl.*`` flags, their defaults, help and checks."""

    categories: Tuple[str, ...] = field(
        default=DEFAULT_CATEGORIES,
        metadata={"type": str, "help": "comma-separated category names of the labels' 'category' field"},
    )
    hardness_terms: str = field(
        default="both",
        metadata={
            "choices": ["both", "data", "model", "none"],
            "help": "α = α^D·α^M (both), α^D only (data), α^M only (model), or α = 1 (none: plain GRPO's "
            "advantages, the ablation baseline). Terms not in α are still computed and logged when the rollout "
            "carries their key, so every mode logs the same drirl/* metrics",
        },
    )
    reference: str = field(
        default="batch",
        metadata={
            "choices": ["batch", "group", "ema"],
            "help": "δ̄ and mean gap over the category's samples in the batch, over the prompt group, or a "
            "per-category running average (EMA, saved with checkpoints)",
        },
    )
    ema_decay: float = field(default=0.9, metadata={"help": "EMA decay for --drirl.reference ema"})
    outlier_k: float = field(default=1.5, metadata={"help": "reward-gap outlier filter: keep (g - m)^2 <= (k·std)^2"})
    alpha_exponent: float = field(
        default=1.0,
        metadata={
            "help": "sharpening, not in the paper: α <- α^p before the clamp (1 = off; >1 spreads α around 1, "
            "which the sigmoid ratios keep within a few percent when similarities and gaps vary little)"
        },
    )
    alpha_clip: Optional[Tuple[float, float]] = field(
        default=None,
        metadata={"type": float, "nargs": 2, "metavar": ("LOW", "HIGH"), "help": "clamp α to [LOW, HIGH]"},
    )

    def __post_init__(self):
        # Values may come from flags, a hand-made namespace or code: normalise, then check.
        object.__setattr__(self, "categories", parse_categories(self.categories))
        object.__setattr__(self, "alpha_clip", tuple(self.alpha_clip) if self.alpha_clip else None)
        object.__setattr__(self, "ema_decay", float(self.ema_decay))
        object.__setattr__(self, "outlier_k", float(self.outlier_k))
        object.__setattr__(self, "alpha_exponent", float(self.alpha_exponent))
        if self.hardness_terms not in ("both", "data", "model", "none"):
            raise ValueError(f"--drirl.hardness_terms is {self.hardness_terms!r}: use both, data, model or none")
        if self.reference not in ("batch", "group", "ema"):
            raise ValueError(f"--drirl.reference is {self.reference!r}: use batch, group or ema")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--drirl.ema_decay is {self.ema_decay}: use a value in [0, 1), e.g. 0.9")
        if not (self.outlier_k > 0 and math.isfinite(self.outlier_k)):
            raise ValueError(f"--drirl.outlier_k is {self.outlier_k}: use a positive number of std, e.g. 1.5")
        if not (self.alpha_exponent > 0 and math.isfinite(self.alpha_exponent)):
            raise ValueError(
                f"--drirl.alpha_exponent is {self.alpha_exponent}: use a positive number (1 = off, e.g. 10 to sharpen)"
            )
        if self.alpha_clip is not None:
            if not (len(self.alpha_clip) == 2 and 0 <= self.alpha_clip[0] < self.alpha_clip[1]):
                raise ValueError(f"--drirl.alpha_clip is {self.alpha_clip}: use LOW HIGH with 0 <= LOW < HIGH")

    @classmethod
    def from_args(cls, args) -> "GRPOSConfig":
        """From OpenRLHF's hierarchized args (``args.drirl.*``; absent fields take the defaults), checked."""
        return config_from_args(cls, args, "drirl")


def add_grpo_s_arguments(parser) -> None:
    """GRPO-S flags, added to OpenRLHF's train_ppo_ray parser by ``openrlhf_drirl.cli.train_ppo_ray``."""
    add_config_arguments(parser, GRPOSConfig, "drirl", "GRPO-S (openrlhf_drirl)")


def group_normalized_rewards(rewards: torch.Tensor, divide_by_std: bool = True) -> torch.Tensor:
    """z = (r - mean_group) / (std_group + 1e-9) over the last dim, exactly OpenRLHF's group_norm (unbiased std);
    without the std (``--algo.advantage.no_std_norm``) z = r - mean_group, exactly its dr_grpo."""
    centered = rewards - rewards.mean(-1, keepdim=True)
    return centered / (rewards.std(-1, keepdim=True) + 1e-9) if divide_by_std else centered


def segment_sum(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    return torch.zeros(num_segments, dtype=values.dtype, device=values.device).index_add_(0, segment_ids, values)


def segment_mean(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Mean of ``values`` per segment id; segments with no sample get 0 (they are never gathered)."""
    counts = segment_sum(torch.ones_like(values), segment_ids, num_segments)
    return segment_sum(values, segment_ids, num_segments) / counts.clamp(min=1)


def log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """log σ(x) = min(x, 0) - log(1 + e^-|x|), stable for any x. Not F.logsigmoid: its CPU kernel runs a parallel
    loop whatever the size, which took milliseconds per call on 2 busy cores (bench_grpo_s.py)."""
    return x.clamp(max=0) - (-x.abs()).exp().log1p()


def sigmoid_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """σ(a) / σ(b) as exp(log σ(a) - log σ(b)): σ(b) underflows to 0 for b below about -100 in float32 (a reward gap
    of -150 gave 0/0 = NaN); the log form stays finite. |log ratio| is capped at MAX_LOG_SCALE so α · z stays finite
    even for gaps of -1e30; OpenRLHF's --reward.clip_range bounds the shaped reward anyway."""
    log_ratio = log_sigmoid(numerator) - log_sigmoid(denominator)
    return torch.exp(log_ratio.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE))


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
    # δ and δ̄ lie in [0, 2] (W is a cosine): σ cannot underflow, so the plain ratio needs no log form. It also keeps
    # exp/log off the per-sample tensor: on CPU their kernels run parallel loops from 2k values, which cost
    # milliseconds each on busy cores (bench_grpo_s.py); sigmoid and division do not.
    alpha = torch.sigmoid(dissimilarity) / torch.sigmoid(mean_dissimilarity).index_select(0, segment_ids)
    return alpha, mean_dissimilarity


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
    # Per-sample gathers use index_select, not tensor[ids]: on CPU, advanced indexing runs a parallel kernel that took
    # milliseconds per call on 2 busy cores (bench_grpo_s.py) where index_select takes microseconds; same values.
    batch_mean = segment_mean(reward_gap, segment_ids, num_segments)
    center = batch_mean if mean_reward_gap is None else mean_reward_gap
    variance = segment_mean((reward_gap - batch_mean.index_select(0, segment_ids)) ** 2, segment_ids, num_segments)
    sample_variance = variance.index_select(0, segment_ids)
    # τ = (k·s)²; s = 0 (all gaps equal) keeps all, whatever the rounding of the mean.
    kept = ((reward_gap - center.index_select(0, segment_ids)) ** 2 <= (outlier_k**2) * sample_variance) | (
        sample_variance == 0
    )
    kept_counts = segment_sum(kept.to(reward_gap.dtype), segment_ids, num_segments)
    kept = kept | (kept_counts.index_select(0, segment_ids) == 0)
    kept_mean = segment_sum(reward_gap * kept, segment_ids, num_segments) / segment_sum(
        kept.to(reward_gap.dtype), segment_ids, num_segments
    ).clamp(min=1)
    return sigmoid_ratio(kept_mean, center), kept


def _per_sample_info(info: Dict[str, torch.Tensor], key: str, num_samples: int, disable_hint: str) -> torch.Tensor:
    if key not in info:
        raise KeyError(
            f"GRPO-S needs experience.info[{key!r}] but the rollout has only {sorted(info)}: {_REWARD_FUNC_HINT}; "
            f"or {disable_hint}"
        )
    values = info[key].double().reshape(-1)
    if values.numel() != num_samples:
        raise ValueError(
            f"experience.info[{key!r}] has {values.numel()} values for {num_samples} samples: the reward function "
            "must return one value per sample (rollout order)"
        )
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
    return torch.tensor([running.get(c, 0.0) for c in categories], dtype=batch_means.dtype, device=batch_means.device)


def check_grpo_s_args(args) -> None:
    """Launch-time checks: valid ``--drirl.*`` values, and a reward function that can return the drirl_* keys."""
    GRPOSConfig.from_args(args)
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
    if n < 2:
        raise ValueError(
            f"GRPO-S normalises rewards within each prompt's group, but the groups have {n} sample: set "
            "--rollout.n_samples_per_prompt > 1 (rewards must have shape (prompts, n) with n >= 2)"
        )
    num_samples, device = num_groups * n, rewards.device
    if len(labels) != num_samples:
        raise ValueError(
            f"labels has {len(labels)} entries for rewards of shape {tuple(rewards.shape)} ({num_samples} samples): "
            "pass one label per sample, in rollout order (a prompt's n samples together)"
        )
    categories = list(config.categories)
    # A group's n samples answer one prompt and carry its label: one parse per group (the hot part at 8k samples).
    category = torch.tensor(category_ids(labels, categories, stride=n), device=device).repeat_interleave(n)
    category_counts = segment_sum(torch.ones(num_samples, device=device), category, len(categories)).tolist()
    present = [c for c, count in zip(categories, category_counts) if count]
    if config.reference == "group":
        segment, num_segments = torch.arange(num_groups, device=device).repeat_interleave(n), num_groups
    else:
        segment, num_segments = category, len(categories)

    # float64 inside: gaps and rewards far from 0 (1e20) would overflow their squares in float32.
    # --algo.advantage.no_std_norm: a group whose samples the reward barely tells apart (all compliant, say) is not
    # scaled up to advantages as large as those of a group with a refusal in it.
    z = group_normalized_rewards(rewards.double(), not args.algo.advantage.no_std_norm).reshape(-1)
    alpha_data = torch.ones(num_samples, dtype=torch.float64, device=device)
    alpha_model = torch.ones(num_samples, dtype=torch.float64, device=device)
    metrics = {}
    # A term outside α is still computed (for the log) when its key is there; it is required only when used.
    use_data, use_model = config.hardness_terms in ("both", "data"), config.hardness_terms in ("both", "model")
    if use_data or SIMILARITY_KEY in info:
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
    if use_model or REWARD_GAP_KEY in info:
        gap = _per_sample_info(info, REWARD_GAP_KEY, num_samples, "use --drirl.hardness_terms data")
        reference = None
        if config.reference == "ema":
            batch_means = segment_mean(gap, segment, num_segments)
            reference = _ema_update(state, "ema_mean_reward_gap", batch_means, present, config.ema_decay, categories)
        alpha_model_segment, kept = model_responsiveness_scale(gap, segment, num_segments, config.outlier_k, reference)
        alpha_model = alpha_model_segment.index_select(0, segment)
        metrics["drirl/reward_gap_outlier_frac"] = 1.0 - kept.float().mean()

    alpha = torch.ones_like(z)
    alpha = alpha * alpha_data if use_data else alpha
    alpha = alpha * alpha_model if use_model else alpha
    if config.alpha_exponent != 1.0:
        alpha = alpha.pow(config.alpha_exponent)
    if config.alpha_clip is not None:
        alpha = alpha.clamp(*config.alpha_clip)

    # The log: mean/min/max of α^D and α, α^M and mean reward per category (and mean α^D per category,
    # which shows which categories are hard). Each metric costs a tensor per micro-batch, so no more than these.
    metrics.update({"drirl/alpha": alpha, "drirl/alpha_D": alpha_data, "drirl/alpha_M": alpha_model})
    for name, values in (("alpha", alpha), ("alpha_D", alpha_data)):
        metrics[f"drirl/{name}_min"], metrics[f"drirl/{name}_max"] = values.min(), values.max()
    # One segment mean per metric, not one masked select per (metric, category): the fixed cost at 8k samples.
    per_category = {
        name: segment_mean(values, category, len(categories))
        for name, values in (
            ("reward_mean", rewards.reshape(-1).double()),
            ("alpha_M", alpha_model),
            ("alpha_D_mean", alpha_data),
        )
    }
    for c in present:
        for name, means in per_category.items():
            metrics[f"drirl/{name}/{c}"] = means[categories.index(c)]
    return (alpha * z).reshape(num_groups, n).to(rewards.dtype), metrics

import torch

from openrlhf_drirl.advantage import register_advantage_estimator


def add_arguments(parser):
    parser.add_argument("--my.scale", type=float, default=1.0, help="multiplies the advantages of mean_abs_dev")


@register_advantage_estimator("mean_abs_dev", needs_group=True, add_arguments=add_arguments)
def mean_abs_dev(rewards: torch.Tensor, labels: list, info: dict, args, state: dict):
    """DGPO-style group baseline: n (r_i - mean) / (sum_j |r_j - mean| + 1e-4) within each prompt's group."""
    centered = rewards - rewards.mean(-1, keepdim=True)
    shaped = args.my.scale * rewards.shape[1] * centered / (centered.abs().sum(-1, keepdim=True) + 1e-4)
    state["calls"] = state.get("calls", 0) + 1
    return shaped, {"my/abs_advantage": shaped.abs().reshape(-1)}

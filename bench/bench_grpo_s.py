"""GRPO-S vs group_norm: advantage computation through OpenRLHF's RemoteExperienceMaker.compute_advantages_and_returns.

Same rollout batch for both (default 1024 prompts x 8 samples over 7 categories, OpenRLHF's micro-batch split),
timed interleaved in one run; prints the median time of each and the ratio GRPO-S / group_norm (target <= 1.05 with
static micro-batches, <= 1.10 with ``--max_tokens_per_gpu``, i.e. ``--train.dynamic_batch_enable``).

    python bench/bench_grpo_s.py [--prompts 1024] [--samples 8] [--repeats 7]
    python bench/bench_grpo_s.py --max_tokens_per_gpu 2048      # dynamic batching: fewer, uneven micro-batches

On CPU, ops whose kernels run a parallel loop (advanced indexing, exp/log, F.logsigmoid) cost milliseconds each when
the cores are busy with other jobs; both estimators pay that for their own ops, so compare the ratio, not the times.
"""

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker  # noqa: E402
from rollout_batches import label, make_args, make_maker, make_rollout, micro_batches  # noqa: E402
from tqdm import tqdm  # noqa: E402

from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker  # noqa: E402
from openrlhf_drirl.contract import DEFAULT_CATEGORIES  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max_response", type=int, default=64, help="response tokens drawn from 1..max")
    parser.add_argument("--micro_batch_size", type=int, default=16, help="--rollout.micro_batch_size")
    parser.add_argument(
        "--max_tokens_per_gpu", type=int, default=0, help="> 0: --train.dynamic_batch_enable split (shuffles samples)"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    n, total = args.samples, args.prompts * args.samples
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(total, generator=generator).tolist()
    labels = [label(DEFAULT_CATEGORIES[(i // n) % len(DEFAULT_CATEGORIES)]) for i in range(total)]
    info = {
        "drirl_similarity": (torch.rand(total, generator=generator) * 2 - 1).tolist(),
        "drirl_reward_gap": torch.randn(total, generator=generator).tolist(),
    }
    print(f"building {args.prompts} x {n} rollout ...", flush=True)
    rollout = make_rollout(rewards, labels, info, max_response=args.max_response)
    makers = {
        "group_norm": make_maker(make_args("group_norm", n), cls=RemoteExperienceMaker),
        "grpo_s": make_maker(make_args("grpo_s", n), cls=DRIRLExperienceMaker),
    }
    for maker in makers.values():
        maker.args.rollout.micro_batch_size = args.micro_batch_size
        maker.args.rollout.max_tokens_per_gpu = args.max_tokens_per_gpu
        maker.args.train.dynamic_batch_enable = args.max_tokens_per_gpu > 0
    batches = micro_batches(makers["group_norm"], rollout)
    print(f"{len(batches)} micro-batches; timing {args.repeats} interleaved repeats", flush=True)

    times = {name: [] for name in makers}
    for _ in tqdm(range(args.repeats), desc="repeats"):
        for name, maker in makers.items():
            experiences = copy.deepcopy(batches)
            start = time.perf_counter()
            maker.compute_advantages_and_returns(experiences)
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"{name:>10}: median {value * 1e3:8.2f} ms  (min {min(times[name]) * 1e3:.2f} ms)")
    target = 1.10 if args.max_tokens_per_gpu > 0 else 1.05
    ratio = medians["grpo_s"] / medians["group_norm"]
    verdict = "met" if ratio <= target else "NOT met"
    print(f"ratio grpo_s / group_norm (median): {ratio:.3f}  (target <= {target:.2f}: {verdict})")


if __name__ == "__main__":
    main()

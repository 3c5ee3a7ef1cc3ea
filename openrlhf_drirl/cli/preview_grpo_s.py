"""``python -m openrlhf_drirl.cli.preview_grpo_s``: one GRPO-S rollout batch through OpenRLHF's own code path, no GPU.

Checks a reward setup before a cluster launch, and is the last stage of the CPU smoke run. With the same
``--data.*``, ``--rollout.*``, ``--reward.remote_url`` and ``--drirl.*`` flags as ``train_ppo_ray``, it:
1. loads prompts with OpenRLHF's ``blending_datasets`` + ``PromptDataset`` (chat template, label key);
2. samples n responses per prompt with Hugging Face ``generate`` behind the engine interface that OpenRLHF's
   ``SingleTurnAgentExecutor`` drives (vLLM's place), so the reward request, its query text and the extra_logs
   handling are OpenRLHF's own;
3. turns responses into ``Experience`` objects (``SamplesGenerator._process_response_into_experience``), splits them
   into micro-batches and runs ``compute_advantages_and_returns`` with the chosen estimator;
4. prints per-category rewards and GRPO-S scales, and writes the per-sample values as JSON and a plot.
"""

import argparse
import asyncio
import json
import os
from types import SimpleNamespace

import torch
from tqdm import tqdm

from openrlhf_drirl.advantage.grpo_s import add_grpo_s_arguments
from openrlhf_drirl.contract import REWARD_GAP_KEY, SIMILARITY_KEY, category_of, parse_categories


class HFGenerateEngine:
    """The slice of OpenRLHF's vLLM engine interface that ``SingleTurnAgentExecutor.execute`` calls."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        input_ids = torch.tensor([prompt_token_ids])
        output = self.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=True,
            temperature=sampling_params.temperature,
            top_p=sampling_params.top_p,
            max_new_tokens=sampling_params.max_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )[0, len(prompt_token_ids) :].tolist()
        finish_reason = "stop" if output and output[-1] == self.tokenizer.eos_token_id else "length"
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=output, finish_reason=finish_reason, logprobs=None)])


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actor.model_name_or_path", required=True, help="policy (HF checkpoint directory)")
    parser.add_argument("--reward.remote_url", required=True, help="reward server URL(s) or reward_func .py file")
    parser.add_argument("--data.prompt_dataset", required=True)
    parser.add_argument("--data.input_key", default="prompt")
    parser.add_argument("--data.label_key", default="label")
    parser.add_argument("--data.apply_chat_template", action="store_true", default=False)
    parser.add_argument("--data.max_samples", type=int, default=16, help="number of prompts in the batch")
    parser.add_argument("--data.max_len", type=int, default=512)
    parser.add_argument("--rollout.n_samples_per_prompt", type=int, default=4)
    parser.add_argument("--rollout.max_new_tokens", type=int, default=48)
    parser.add_argument("--rollout.temperature", type=float, default=1.0)
    parser.add_argument("--rollout.top_p", type=float, default=1.0)
    parser.add_argument("--rollout.micro_batch_size", type=int, default=4)
    parser.add_argument("--algo.advantage.estimator", default="grpo_s")
    parser.add_argument("--train.seed", type=int, default=42)
    parser.add_argument("--output_dir", default="./runs/preview_grpo_s")
    add_grpo_s_arguments(parser)
    from openrlhf.utils.config import hierarchize

    args = hierarchize(parser.parse_args(argv))
    args.reward.remote_url = args.reward.remote_url.split(",")
    return args


def rollout(args, tokenizer, model):
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from vllm import SamplingParams

    strategy = SimpleNamespace(args=args, print=print, is_rank_0=lambda: True)
    data = blending_datasets(args.data.prompt_dataset, None, strategy, args.train.seed)
    # Shuffled as OpenRLHF's prompt dataloader does, so the batch mixes categories.
    data = data.shuffle(seed=args.train.seed)
    dataset = PromptDataset(data.select(range(min(args.data.max_samples, len(data)))), tokenizer, strategy)
    executor = SingleTurnAgentExecutor(remote_rm_url=args.reward.remote_url)
    engine = HFGenerateEngine(model, tokenizer)
    sampling = SamplingParams(
        temperature=args.rollout.temperature, top_p=args.rollout.top_p, max_tokens=args.rollout.max_new_tokens
    )
    sampling.logprobs = None
    samples = []
    n = args.rollout.n_samples_per_prompt
    with tqdm(total=len(dataset) * n, desc="rollout + reward") as progress:
        for i in range(len(dataset)):
            _, prompt, label, _ = dataset[i]
            for _ in range(n):  # a group's samples are contiguous, as OpenRLHF's vLLM dispatch makes them
                output = asyncio.run(executor.execute(prompt, label, sampling, args.data.max_len, tokenizer, engine))
                if output["reward"] is None:
                    raise RuntimeError(
                        f"no reward came back from {args.reward.remote_url} for prompt {i}: is the reward server up? "
                        "(OpenRLHF logs the request error at INFO level)"
                    )
                samples.append(
                    SamplesGenerator._process_response_into_experience(None, output, max_len=args.data.max_len)
                )
                progress.update()
    return samples


def main(argv=None):
    args = parse_arguments(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import openrlhf_drirl.advantage  # noqa: F401  (registers grpo_s)
    from openrlhf_drirl.advantage.experience_maker import DRIRLExperienceMaker

    torch.manual_seed(args.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.actor.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.actor.model_name_or_path).eval()
    samples = rollout(args, tokenizer, model)

    # OpenRLHF's experience maker, built without its Ray model groups (the forwards are not needed here).
    args.reward.clip_range = (-10.0, 10.0)
    args.reward.overlong_buffer_len, args.reward.stop_properly_penalty_coef = None, None
    args.algo.advantage.gamma, args.algo.advantage.lambd, args.algo.advantage.no_std_norm = 1.0, 1.0, False
    args.train.dynamic_batch_enable = False
    maker = DRIRLExperienceMaker.__new__(DRIRLExperienceMaker)
    maker.strategy, maker.args, maker.tokenizer = SimpleNamespace(args=args), args, tokenizer
    maker.advantage_estimator, maker.kl_ctl, maker.advantage_state = (
        args.algo.advantage.estimator,
        SimpleNamespace(value=0.0),
        {},
    )
    experiences = maker.split_rollout_samples(samples)
    for experience in experiences:  # --algo.kl.use_loss: the KL is a loss term, zero in the reward
        experience.kl = torch.zeros(experience.action_mask.shape)
    experiences = maker.compute_advantages_and_returns(experiences)
    write_report(summarize(experiences, parse_categories(args.drirl.categories)), args.output_dir)


def summarize(experiences, categories):
    """Per category: the samples' values of each column (rollout order within the category)."""
    columns = ["reward", SIMILARITY_KEY, REWARD_GAP_KEY, "drirl/alpha_D", "drirl/alpha_M", "drirl/alpha"]
    rows = {}
    for experience in experiences:
        for row, label in enumerate(experience.labels):
            entry = rows.setdefault(category_of(label, categories), {c: [] for c in columns + ["advantage"]})
            for column in columns:
                if column in experience.info:
                    entry[column].append(float(experience.info[column][row]))
            entry["advantage"].append(float(experience.advantages[row][experience.action_mask[row]].mean()))
    return dict(sorted(rows.items()))


def write_report(samples, output_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    os.makedirs(output_dir, exist_ok=True)
    print(
        f"{'category':<32}{'n':>4}{'reward':>9}{'W':>8}{'gap':>8}{'α^D min':>9}{'α^D max':>9}{'α^M':>7}{'α mean':>8}"
    )
    for category, v in samples.items():
        alpha_data = v["drirl/alpha_D"] or [float("nan")]
        print(
            f"{category:<32}{len(v['reward']):>4}{mean(v['reward']):>9.3f}{mean(v[SIMILARITY_KEY]):>8.3f}"
            f"{mean(v[REWARD_GAP_KEY]):>8.3f}{min(alpha_data):>9.3f}{max(alpha_data):>9.3f}"
            f"{mean(v['drirl/alpha_M']):>7.3f}{mean(v['drirl/alpha']):>8.3f}"
        )
    with open(os.path.join(output_dir, "grpo_s_batch.json"), "w") as f:
        json.dump(samples, f, indent=1)

    # Per-sample α^D and α as points, α^M (one value per category) as a bar: the spread is what GRPO-S adds.
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(samples)), 4))
    for i, (category, v) in enumerate(samples.items()):
        k = len(v["drirl/alpha"])
        jitter = [(j / max(k - 1, 1) - 0.5) * 0.3 for j in range(k)]
        axis.bar(i, mean(v["drirl/alpha_M"]), 0.8, color="tab:orange", alpha=0.3, label="α^M" if i == 0 else None)
        if v["drirl/alpha_D"]:
            axis.scatter(
                [i - 0.2 + x for x in jitter], v["drirl/alpha_D"], s=12, c="tab:blue", label="α^D" if i == 0 else None
            )
        axis.scatter(
            [i + 0.2 + x for x in jitter],
            v["drirl/alpha"],
            s=12,
            c="tab:green",
            label="α = α^D·α^M" if i == 0 else None,
        )
    axis.axhline(1.0, color="gray", linewidth=0.8)
    shown = [x for v in samples.values() for k in ("drirl/alpha_D", "drirl/alpha_M", "drirl/alpha") for x in v[k]]
    axis.set_ylim(min(shown + [1.0]) - 0.05, max(shown + [1.0]) + 0.05)  # the spread around 1 is what matters
    axis.set_xticks(range(len(samples)), [c.replace("_", "\n") for c in samples], fontsize=7)
    axis.set_ylabel("scale of the group-normalised reward")
    axis.set_title("GRPO-S scales per sample and category (one rollout batch)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(output_dir, "grpo_s_batch.png"), dpi=120)
    print(f"wrote {output_dir}/grpo_s_batch.json and grpo_s_batch.png")


if __name__ == "__main__":
    main()

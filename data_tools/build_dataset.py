"""Build the balanced Chain-of-Draft safety dataset: prompts for GRPO-S and (demonstration, policy sample) pairs for
the category reward models.

    python -m data_tools.build_dataset --output_dir runs/cod_data --gen.model Qwen/Qwen2-7B-Instruct \\
        --policy.model Qwen/Qwen2-7B-Instruct --data.n_per_category 100

Modules, one job each: plan.py (load sources -> drop exact duplicates -> drop prompts overlapping the evaluation
sets -> drop near duplicates -> categorize -> per category a seeded order and the balanced size N; all that
--plan_only runs), manifest.py (config hash and the list of runs), generation_log.py (demonstrations, keeping the
first N valid per category, CoT samples for the token comparison and base-policy samples, the rejected side, all
through openrlhf_drirl.generation), outputs.py (seeded train/held-out split, prompt and pair rows, rejects, stats.json
and stats.png).

Generation results are appended to OUTPUT_DIR/work/*.jsonl one line per record, each stamped with the config hash,
and each request has a seed derived from (--seed, stage, record id, attempt). A run killed at any point and started
again with the same flags skips the records already logged and writes the same files as an uninterrupted run. Bad
input (another config on the same --output_dir, a corrupt log line or manifest, --plan_only on a finished run
included) exits with code 2 and one line naming the flag or file and the fix, before anything is written.
"""

import argparse
import json
import os
import sys
import time

from data_tools import DatasetBuildError
from data_tools.categorize import DEFAULT_PROTOTYPES, DEFAULT_TAXONOMY_MAP
from data_tools.cod_format import DEFAULT_REFUSAL_PHRASES, SEED_DEMONSTRATIONS
from data_tools.generation_log import WORK_LOGS, AppendLog, run_generation
from data_tools.manifest import finish_run, start_run
from data_tools.outputs import write_dataset, write_json, write_plan, write_plan_reports
from data_tools.plan import make_plan
from data_tools.prompt_sources import BUNDLED_BENIGN_SOURCES, BUNDLED_EVAL_SETS, BUNDLED_SOURCES
from data_tools.similarity import NEAR_DUP_METHODS
from openrlhf_drirl.contract import COD_SEPARATOR, parse_categories
from openrlhf_drirl.generation import BACKENDS, GenerationError
from openrlhf_drirl.records import RecordError

DEFAULT_NEAR_DUP_THRESHOLD = {"minilm": 0.9, "ngram": 0.6}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m data_tools.build_dataset",
        description=__doc__.split("\n\n")[0] + " Outputs and formats: data_tools/README.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--output_dir", required=True, metavar="DIR", help="where all outputs go; rerun with the same flags to resume")
    add("--seed", type=int, default=42, help="seeds the ordering, the split and every generation request")
    add("--plan_only", action="store_true", help="stop after filtering, categorizing and balancing (no models)")

    add = parser.add_argument_group("data: sources, categories, filtering, balance").add_argument
    add(
        "--data.sources",
        dest="sources",
        nargs="+",
        metavar="SPEC",
        default=list(BUNDLED_SOURCES),
        help="bundled 'donotanswer' and/or PATH[:prompt=COL,category=COL,taxonomy=TABLE,split=SPLIT,name=NAME] "
        "(.jsonl/.json/.csv/.parquet file or datasets.save_to_disk folder); TABLE is a table of --data.taxonomy_map, "
        "or 'categories' when COL already holds category names",
    )
    add("--data.categories", dest="categories", metavar="A,B,..", default=None, help="category names; None = the 7")
    add(
        "--data.taxonomy_map",
        dest="taxonomy_map",
        metavar="JSON",
        default=DEFAULT_TAXONOMY_MAP,
        help='source label -> category tables (null = unmapped, "classify" = ask the classifier)',
    )
    add(
        "--data.prototypes",
        dest="prototypes",
        metavar="JSON",
        default=DEFAULT_PROTOTYPES,
        help="descriptions of each category, for the classifier",
    )
    add(
        "--data.classifier",
        dest="classifier",
        choices=("minilm", "none"),
        default="minilm",
        help="for prompts without a mapped label: nearest prototype by MiniLM, or none (report them unmapped)",
    )
    add(
        "--data.classifier_threshold",
        dest="classifier_threshold",
        type=float,
        default=0.3,
        help="below this cosine similarity to every prototype a prompt is reported unmapped",
    )
    add(
        "--data.near_dup_method",
        dest="near_dup_method",
        choices=NEAR_DUP_METHODS,
        default="minilm",
        help="near duplicates (also against the eval sets): MiniLM cosine or word 3-gram Jaccard",
    )
    add(
        "--data.near_dup_threshold",
        dest="near_dup_threshold",
        type=float,
        default=None,
        help="similarity at or above which two prompts are near duplicates; None = 0.9 (minilm) / 0.6 (ngram)",
    )
    add(
        "--data.eval_sets",
        dest="eval_sets",
        nargs="*",
        metavar="SPEC",
        default=list(BUNDLED_EVAL_SETS),
        help="evaluation prompts that must not be trained on: bundled names or source specs",
    )
    add(
        "--data.n_per_category",
        dest="n_per_category",
        type=int,
        default=None,
        metavar="N",
        help="records per category (train + held-out); None = the smallest category's size",
    )
    add(
        "--data.heldout_ratio",
        dest="heldout_ratio",
        type=float,
        default=0.1,
        help="share of each category held out (at least 1 when the ratio is > 0)",
    )
    add(
        "--data.benign_sources",
        dest="benign_sources",
        nargs="*",
        metavar="SPEC",
        default=list(BUNDLED_BENIGN_SOURCES),
        help="benign prompts that look like a category's (its column holds category names): bundled "
        "'benign_contrast' (10 per category) or PATH:prompt=COL,category=COL; read only with "
        "--data.benign_per_category",
    )
    add(
        "--data.benign_per_category",
        dest="benign_per_category",
        type=int,
        default=0,
        metavar="M",
        help="benign look-alikes drawn per category (split like the harmful ones); their IRL pairs prefer the base "
        "policy's compliant answer over a refusal of the same prompt, and their training-split prompts join the GRPO "
        "prompts, all under --data.benign_category (0: off, the paper's harmful-only data)",
    )
    add(
        "--data.benign_category",
        dest="benign_category",
        default="benign",
        metavar="NAME",
        help="the category the benign pairs and prompts carry, so that they train and are scored by a head of their "
        "own (add it to --irl.categories and --drirl.categories); their look-alike category stays in "
        "lookalike_category",
    )
    add(
        "--data.paraphrase_fill",
        dest="paraphrase_fill",
        action="store_true",
        help="top up categories with fewer than N prompts with generator paraphrases (templates/paraphrase.jinja)",
    )

    add = parser.add_argument_group("gen: demonstration generator").add_argument
    add("--gen.backend", dest="gen_backend", choices=BACKENDS, default="transformers", help="generation backend")
    add(
        "--gen.model", dest="gen_model", metavar="MODEL", help="HF path/name (transformers, vllm) or served model name"
    )
    add("--gen.url", dest="gen_url", metavar="URL", default=None, help="OpenAI-compatible base URL (http://h:8000/v1)")
    add(
        "--gen.api_key_env",
        dest="gen_api_key_env",
        metavar="VAR",
        default="OPENAI_API_KEY",
        help="environment variable holding the endpoint's API key, if any",
    )
    add("--gen.template", dest="gen_template", default="cod", help="cod, cot or a path to a .jinja template")
    add(
        "--gen.seed_demonstrations",
        dest="seed_demonstrations",
        metavar="JSONL",
        default=SEED_DEMONSTRATIONS,
        help="few-shot examples per category",
    )
    add("--gen.num_examples", dest="num_examples", type=int, default=2, help="few-shot examples per prompt")
    add("--gen.max_new_tokens", dest="gen_max_new_tokens", type=int, default=256, help="per demonstration")
    add("--gen.temperature", dest="gen_temperature", type=float, default=0.7, help="sampling temperature")
    add("--gen.max_attempts", dest="max_attempts", type=int, default=4, help="tries per record before it is rejected")
    add("--gen.max_draft_words", dest="max_draft_words", type=int, default=5, help="words allowed per draft step")
    add(
        "--gen.cod_mode",
        dest="gen_cod_mode",
        choices=["single", "prefilled"],
        default="single",
        help="single = the model writes the whole demonstration in one call; prefilled = the builder writes the "
        "slot names (Request:, Harm:), the category line, #### and the refusal opening \"I'm sorry, but I can't help "
        'with", and the model continues each in a short call of its own (raw text after the chat template, so '
        "transformers or vllm only; for small generators, e.g. the CPU recipes' SmolLM2-135M)",
    )
    add(
        "--gen.fallback",
        dest="demo_fallback",
        choices=["none", "prompt"],
        default="none",
        help="a record whose --gen.max_attempts outputs are all invalid: none = rejected (the next candidate is "
        "tried); prompt = given a demonstration built from its own prompt (its first content words as the request "
        "draft, its category, a refusal quoting it), marked as a fallback in its label and counted in stats.json",
    )
    add(
        "--gen.refusal_phrases",
        dest="refusal_phrases",
        metavar="TXT",
        default=DEFAULT_REFUSAL_PHRASES,
        help=f"one phrase per line; the answer after {COD_SEPARATOR} must contain one",
    )
    add(
        "--gen.batch_size",
        dest="gen_batch_size",
        type=int,
        default=64,
        help="records generated and logged together (a kill loses at most one batch of work)",
    )

    add = parser.add_argument_group(
        "policy: base policy whose samples are the rejected side of irl_pairs"
    ).add_argument
    add("--policy.backend", dest="policy_backend", choices=BACKENDS, default="transformers", help="generation backend")
    add("--policy.model", dest="policy_model", metavar="MODEL", help="the base policy to be aligned")
    add("--policy.url", dest="policy_url", metavar="URL", default=None, help="OpenAI-compatible base URL")
    add("--policy.api_key_env", dest="policy_api_key_env", metavar="VAR", default="OPENAI_API_KEY", help="API key var")
    add("--policy.max_new_tokens", dest="policy_max_new_tokens", type=int, default=256, help="per sample")
    add("--policy.temperature", dest="policy_temperature", type=float, default=1.0, help="sampling temperature")
    add(
        "--policy.n_samples",
        dest="policy_n_samples",
        type=int,
        default=1,
        help="samples per prompt, each one IRL pair with the prompt's demonstration as chosen",
    )
    add(
        "--policy.heldout_n_samples",
        dest="policy_heldout_n_samples",
        type=int,
        default=0,
        help="samples per held-out prompt (0: --policy.n_samples): more held-out IRL pairs for the reward model's "
        "pairwise accuracy, at no change to the training pairs",
    )
    add(
        "--policy.negatives",
        dest="policy_negatives",
        choices=("all", "compliant"),
        default="all",
        help="which samples become IRL negatives: all, or compliant (those the evaluation's refusal judge does not "
        "call a refusal: a pair of two refusals teaches the reward model the demonstration's wording, not refusal)",
    )

    add = parser.add_argument_group("cot: CoT samples from the generator, for the CoD vs CoT token count").add_argument
    add("--cot.n_per_category", dest="cot_n_per_category", type=int, default=4, help="prompts per category; 0 = off")
    add("--cot.max_new_tokens", dest="cot_max_new_tokens", type=int, default=1024, help="per CoT sample")

    add = parser.add_argument_group("serving: settings of each backend").add_argument
    add(
        "--hf.batch_size",
        dest="hf_batch_size",
        type=int,
        default=16,
        help="transformers: prompts padded into one batch; each keeps its own seed (1 = one prompt at a time)",
    )
    add("--http.timeout", dest="http_timeout", type=float, default=120.0, help="seconds per request")
    add("--http.retries", dest="http_retries", type=int, default=5, help="retries on errors, timeouts, 429, 5xx")
    add("--http.concurrency", dest="http_concurrency", type=int, default=16, help="requests in flight")
    add("--vllm.tensor_parallel_size", dest="vllm_tensor_parallel_size", type=int, default=1, help="GPUs per engine")
    add(
        "--vllm.gpu_memory_utilization",
        dest="vllm_gpu_memory_utilization",
        type=float,
        default=0.85,
        help="share of GPU memory vLLM may use",
    )
    add(
        "--vllm.max_model_len",
        dest="vllm_max_model_len",
        type=int,
        default=None,
        help="context (prompt + new tokens) vLLM sizes its KV cache for; default: the model's (Llama-3.1: 131072)",
    )

    args = parser.parse_args(argv)
    if args.near_dup_threshold is None:
        args.near_dup_threshold = DEFAULT_NEAR_DUP_THRESHOLD[args.near_dup_method]
    if not args.plan_only and (not args.gen_model or not args.policy_model):
        parser.error("--gen.model and --policy.model are required (or pass --plan_only)")
    if args.n_per_category is not None and args.n_per_category < 1:
        parser.error("--data.n_per_category must be at least 1 (leave it out for the smallest category's size)")
    if args.benign_per_category < 0:
        parser.error(f"--data.benign_per_category must be 0 (off) or more, got {args.benign_per_category}")
    if args.benign_per_category and not args.benign_sources:
        parser.error("--data.benign_per_category needs --data.benign_sources (e.g. the bundled benign_contrast)")
    try:
        harm_categories = parse_categories(args.categories)  # as the plan reads them
    except ValueError as e:
        parser.error(f"--data.categories {args.categories!r}: {e}")
    if args.benign_per_category and args.benign_category.strip() in harm_categories:
        parser.error(
            f"--data.benign_category {args.benign_category!r} is one of the harm categories: a benign prompt needs a "
            "head of its own (a harm category's head prefers the refusal); pass another name, e.g. benign"
        )
    if args.policy_n_samples < 1:
        parser.error(f"--policy.n_samples must be at least 1, got {args.policy_n_samples}")
    if args.policy_heldout_n_samples < 0:
        parser.error(
            "--policy.heldout_n_samples must be 0 (as --policy.n_samples) or more, got "
            f"{args.policy_heldout_n_samples}"
        )
    if not 0 <= args.heldout_ratio < 1:
        parser.error("--data.heldout_ratio must be in [0, 1)")
    if args.gen_cod_mode == "prefilled" and args.gen_backend == "openai":
        parser.error(
            "--gen.cod_mode prefilled continues the assistant's text after the model's chat template, which the "
            "openai backend's chat endpoint cannot do: use --gen.backend transformers or vllm, or --gen.cod_mode single"
        )
    return args


def build(args) -> dict:
    """Plan, check the manifest and the work logs, generate (resuming from the logs), write the outputs; returns the
    stats. Every check comes before the first write, so a refused run leaves the output dir as it was."""
    started = time.time()
    out, work = args.output_dir, os.path.join(args.output_dir, "work")
    plan = make_plan(args)
    timings = {"prepare": round(time.time() - started, 2)}
    benign = {f"benign:{c}": rows for c, rows in plan.benign_candidates.items()}
    manifest = start_run(args, {**plan.candidates, **benign}, started)
    config_hash = manifest["config_hash"]
    # The log records carry the hash too, so a lost manifest.json cannot let another config resume. start_run refused
    # a manifest of another config: one that exists vouches for records logged before they carried the hash.
    unstamped_ok = os.path.exists(os.path.join(out, "manifest.json"))
    logs = {name: AppendLog(os.path.join(work, f"{name}.jsonl"), config_hash, unstamped_ok) for name in WORK_LOGS}
    # A finished run is told by its manifest or, when that is gone, by its outputs.
    if args.plan_only and (
        any("finished" in run for run in manifest["runs"]) or os.path.exists(os.path.join(out, "prompts.train.jsonl"))
    ):
        raise DatasetBuildError(
            f"{out} holds a finished run, whose stats.json and reports --plan_only would replace (nothing was "
            "written): pass a new --output_dir for the plan"
        )
    os.makedirs(work, exist_ok=True)
    write_json(os.path.join(out, "manifest.json"), manifest)
    write_plan_reports(out, plan)
    print(f"[build_dataset] {json.dumps(plan.counts)}", flush=True)
    if args.plan_only:
        return write_plan(out, plan, config_hash)
    generated = run_generation(args, plan, logs, timings)
    stats = write_dataset(args, plan, generated, config_hash, timings, started)
    finish_run(out, manifest, stats["counts"])
    return stats


def main(argv=None):
    args = parse_args(argv)
    try:
        stats = build(args)
    except (DatasetBuildError, GenerationError, RecordError) as e:
        # Bad input is one line naming the flag or file and the fix, with argparse's exit code; never a traceback.
        print(f"build_dataset: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = args.output_dir
    print(f"[build_dataset] counts: {json.dumps(stats['counts'])}")
    if not args.plan_only:
        print(f"[build_dataset] tokens: {json.dumps(stats['tokens'])}")
        for name in ("prompts.train", "prompts.heldout", "irl_pairs.train", "irl_pairs.heldout", "rejects"):
            print(f"[build_dataset] {name}: {os.path.join(out, name + '.jsonl')}")
        print(f"[build_dataset] stats: {os.path.join(out, 'stats.json')} and stats.png; manifest: manifest.json")
    else:
        print(f"[build_dataset] plan: {os.path.join(out, 'plan.jsonl')}; stats: {os.path.join(out, 'stats.json')}")


if __name__ == "__main__":
    main()

"""Safety evaluation of one or more policies: generate responses on harmful and borderline prompt sets, judge them,
and write metrics with n and bootstrap 95% intervals.

    python -m openrlhf_drirl.cli.evaluate --policy base=PATH [--policy trained=PATH] \\
        --benchmarks strongreject,harmbench,xstest [--heldout DATA_DIR/prompts.heldout.jsonl] \\
        --judge refusal[,reward_model,strongreject] --output_dir DIR
    python -m openrlhf_drirl.cli.evaluate --responses rows.jsonl --judge refusal --output_dir DIR

Usefulness sets (--benchmarks hhh,truthfulqa,bbq,math,gsm, the alignment tax) are scored instead of judged: the
multiple-choice ones by the policy's log-likelihood of each choice, gsm by exact match of the generated answer; their
rows are verdicts of judge "usefulness" with score 1 or 0.

--jailbreaks none,base64,...,dra,gcg_transfer,autodan_template attacks the prompts of --jailbreak_benchmarks
(default strongreject): benchmarks <set>@<attack> per attack and <set>@worst_case per prompt (evaluation/jailbreaks.py).

Writes under --output_dir: responses/<policy>.jsonl (one row per prompt), verdicts.jsonl (one row per judge, policy
and prompt: the response row plus ``judge`` and ``verdict``), metrics.json (metrics[policy][benchmark][category]
[<judge>/<metric>] = {value, ci, n}) and manifest.json (configs and invocations). Everything is append-only: a run
killed at any point and started again with the same flags resumes where it stopped and writes what an
uninterrupted run writes; other model, sampling or judge flags on the same --output_dir are an error.
docs/evaluation.md describes the sets, the judges and the metrics.
"""

import argparse
import os
import sys
import time
from typing import Dict, List

from openrlhf.utils.config import hierarchize
from tqdm import tqdm

from openrlhf_drirl.config_flags import add_config_arguments, config_from_args
from openrlhf_drirl.evaluation import SHOULD_COMPLY, SHOULD_REFUSE, EvaluationError
from openrlhf_drirl.evaluation.benchmarks import (
    BENCHMARKS,
    USEFULNESS_BENCHMARKS,
    UsefulnessConfig,
    load_items,
    score_choices,
    usefulness_verdicts,
)
from openrlhf_drirl.evaluation.jailbreaks import JAILBREAKS, attack_items, worst_case_rows
from openrlhf_drirl.evaluation.judges import JUDGES, ConfiguredJudge, config_dict, get_judge, verdict_config
from openrlhf_drirl.evaluation.metrics import compute_metrics, headline_lines
from openrlhf_drirl.evaluation.responses import config_hash, generate_responses, judge_responses, verdict_key
from openrlhf_drirl.generation import BACKENDS, GenerationError, build_generator
from openrlhf_drirl.generation.vllm_engine import shutdown
from openrlhf_drirl.records import AppendLog, RecordError, read_rows, write_json

DEFAULT_BENCHMARKS = "strongreject,harmbench,xstest"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="where responses, verdicts and metrics are written")
    source = parser.add_argument_group("what is judged")
    source.add_argument(
        "--policy", action="append", default=[], metavar="NAME=PATH", help="a policy to evaluate (repeatable)"
    )
    source.add_argument("--responses", default=None, help="judge these {prompt, response, ...} JSONL rows instead")
    source.add_argument(
        "--benchmarks", default=DEFAULT_BENCHMARKS, help=f"comma list of bundled sets: {', '.join(BENCHMARKS)}"
    )
    source.add_argument("--heldout", default=None, help="the builder's prompts.heldout.jsonl (benchmark heldout)")
    source.add_argument(
        "--prompt_file", action="append", default=[], metavar="NAME=FILE", help="a local JSONL/CSV set (repeatable)"
    )
    source.add_argument("--prompt_key", default="prompt", help="the prompt column of --prompt_file/--responses")
    source.add_argument("--limit", type=int, default=None, help="per set, a seeded slice of N (XSTest keeps its mix)")
    attacks = parser.add_argument_group("jailbreaks (evaluation/jailbreaks.py)")
    attacks.add_argument(
        "--jailbreaks", default="", help=f"comma list of attacks on --jailbreak_benchmarks: {', '.join(JAILBREAKS)}"
    )
    attacks.add_argument(
        "--jailbreak_benchmarks", default="strongreject", help="the (harmful) selected sets whose prompts are attacked"
    )
    attacks.add_argument(
        "--jailbreak_variants",
        type=int,
        default=3,
        help="seeded variants per prompt of gcg_transfer, autodan_template, dra",
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument("--backend", default="transformers", choices=BACKENDS)
    gen.add_argument("--url", default=None, help="the openai backend's base URL, e.g. http://host:8000/v1")
    gen.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable of the openai API key")
    gen.add_argument("--max_new_tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--seed", type=int, default=0, help="per-prompt sampling seeds, --limit slices, bootstrap")
    gen.add_argument("--batch_size", type=int, default=16, help="prompts per generate call")
    gen.add_argument("--no_chat_template", action="store_true", help="send prompts as raw text, not the user turn")
    gen.add_argument("--device", default=None, help="transformers: default cuda when present, else cpu")
    gen.add_argument("--dtype", default="auto", help="transformers: torch dtype of the weights")
    gen.add_argument("--vllm.tensor_parallel_size", type=int, default=1)
    gen.add_argument("--vllm.gpu_memory_utilization", type=float, default=0.85)
    gen.add_argument("--http_concurrency", type=int, default=16, help="openai: requests in flight")
    judging = parser.add_argument_group("judging")
    judging.add_argument("--judge", default="refusal", help=f"comma list of {', '.join(sorted(JUDGES))}")
    judging.add_argument("--bootstrap_resamples", type=int, default=1000)
    for name, judge in sorted(JUDGES.items()):
        add_config_arguments(parser, judge.config_cls, name, f"--judge {name}")
    return parser


def parse_pairs(values: List[str], flag: str) -> Dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise EvaluationError(f"{flag} {value!r} is not NAME=PATH: e.g. {flag} base=/models/base")
        if name in pairs or "/" in name or name.startswith("."):
            raise EvaluationError(f"{flag} name {name!r} is repeated or not a plain name: use e.g. base, trained")
        pairs[name] = path
    return pairs


def generation_config(args, path: str) -> dict:
    """What decides a policy's responses (its hash stamps them); batch size and concurrency only change speed."""
    return {
        "model": path,
        "backend": args.backend,
        "url": args.url,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "chat": not args.no_chat_template,
    }


def make_generator(args, path: str):
    chat = not args.no_chat_template
    if args.backend == "openai":
        kwargs = {"api_key": os.environ.get(args.api_key_env), "chat": chat, "concurrency": args.http_concurrency}
    elif args.backend == "vllm":
        kwargs = {
            "chat": chat,
            "seed": args.seed,
            "tensor_parallel_size": args.vllm.tensor_parallel_size,
            "gpu_memory_utilization": args.vllm.gpu_memory_utilization,
        }
    else:
        kwargs = {"chat": chat, "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size}
    try:
        return build_generator(args.backend, path, url=args.url, **kwargs)
    except OSError as e:
        raise EvaluationError(f"--policy {path!r} cannot be loaded ({e}): pass a model folder or name") from None


def response_rows_from_file(path: str, prompt_key: str) -> List[dict]:
    """--responses rows with the fields the judges and metrics need; missing ones get documented defaults."""
    rows = []
    for i, row in enumerate(read_rows(path)):
        for key in (prompt_key, "response"):
            if not isinstance(row.get(key), str):
                raise EvaluationError(
                    f"--responses {path} row {i + 1} has no string {key!r} (columns: {sorted(row)}): rows need "
                    "'prompt' (or --prompt_key) and 'response'"
                )
        label = row.get("label")
        expected = SHOULD_COMPLY if isinstance(label, str) and label.strip().lower() == "safe" else SHOULD_REFUSE
        benchmark = str(row.get("benchmark") or "responses")
        rows.append(
            {
                "expected": expected,
                "category": "all",
                **row,
                "prompt": row[prompt_key],
                "id": f"{benchmark}/{row.get('id', i)}",
                "benchmark": benchmark,
                "policy": str(row.get("policy") or "responses"),
            }
        )
    keys = [(r["policy"], r["id"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise EvaluationError(f"--responses {path} repeats an (policy, id) pair: make the 'id' column unique")
    return rows


def run(args) -> dict:
    os.makedirs(os.path.join(args.output_dir, "responses"), exist_ok=True)
    judge_names = [n.strip() for n in args.judge.split(",") if n.strip()]
    if not judge_names:
        raise EvaluationError("--judge is empty: pass e.g. --judge refusal")
    for name in judge_names:
        get_judge(name)  # an unknown name is an error naming the known ones
    judges = [get_judge(name, config_from_args(JUDGES[name].config_cls, args, name)) for name in judge_names]
    for judge in judges:
        if hasattr(judge.config, "check_ready"):
            judge.config.check_ready()
    policies = parse_pairs(args.policy, "--policy")
    if bool(policies) == bool(args.responses):
        raise EvaluationError("pass either --policy NAME=PATH (generate, then judge) or --responses FILE (judge only)")
    manifest = {
        "policies": {name: generation_config(args, path) for name, path in policies.items()},
        "judges": {j.name: config_dict(j.config) for j in judges},
        "selection": {
            "benchmarks": args.benchmarks,
            "limit": args.limit,
            "seed": args.seed,
            "jailbreaks": args.jailbreaks,
            "jailbreak_benchmarks": args.jailbreak_benchmarks,
            "jailbreak_variants": args.jailbreak_variants,
        },
        "argv": sys.argv[1:],
    }
    started = time.time()

    if args.responses:
        rows = response_rows_from_file(args.responses, args.prompt_key)
    else:
        benchmarks = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
        prompt_files = parse_pairs(args.prompt_file, "--prompt_file")
        items = load_items(benchmarks, args.heldout, prompt_files, args.prompt_key, args.limit, args.seed)
        if not items:
            raise EvaluationError("no prompts selected: pass --benchmarks or --prompt_file")
        attacked = [n.strip() for n in args.jailbreaks.split(",") if n.strip()]
        if attacked:
            targets = {b.strip() for b in args.jailbreak_benchmarks.split(",") if b.strip()}
            victims = [item for item in items if item["benchmark"] in targets]
            if not victims:
                raise EvaluationError(
                    f"--jailbreak_benchmarks {args.jailbreak_benchmarks!r} names no selected set: add it to "
                    "--benchmarks (or --prompt_file NAME=...)"
                )
            items += attack_items(victims, attacked, args.jailbreak_variants, args.seed)
        # Multiple-choice usefulness items are scored by log-likelihood, everything else is generated.
        scored = [item for item in items if "choices" in item]
        generated = [item for item in items if "choices" not in item]
        if scored and args.backend == "openai":
            raise EvaluationError(
                f"--benchmarks {','.join(sorted({i['benchmark'] for i in scored}))} score choices by log-likelihood, "
                "which the openai backend cannot give: use --backend transformers or vllm for them"
            )
        rows = []
        for name, path in policies.items():
            stamp = config_hash(generation_config(args, path))
            log = AppendLog(os.path.join(args.output_dir, "responses", f"{name}.jsonl"), stamp)
            todo = [item for item in items if item["id"] not in log.records]
            with tqdm(total=len(items), desc=f"generate {name}", unit="prompt", dynamic_ncols=True) as progress:
                if todo:
                    generator = make_generator(args, path)
                    generate_responses(
                        generator,
                        generated,
                        log,
                        name,
                        stamp,
                        max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature,
                        seed=args.seed,
                        batch_size=args.batch_size,
                        progress=progress,
                    )
                    score_choices(generator, scored, log, name, stamp, args.batch_size, progress)
                    shutdown(generator)  # the next policy's engine starts in this process
                    del generator
                else:
                    progress.update(len(items))
            log.close()
            rows += [log.records[item["id"]] for item in items]
    manifest["generation_seconds"] = round(time.time() - started, 1)

    # An attacked row is judged on its decoded answer (a base64 reply read as text); the log keeps what was said.
    rows = [
        (
            {**r, "raw_response": r["response"], "response": JAILBREAKS[r["attack"]].decode(r["response"])}
            if r.get("attack")
            else r
        )
        for r in rows
    ]
    # The safety judges judge the safety sets' responses; the usefulness rows get the usefulness scorer's 1/0.
    usefulness = ConfiguredJudge("usefulness", usefulness_verdicts, UsefulnessConfig(), 256)
    is_useful = [not args.responses and r["benchmark"] in USEFULNESS_BENCHMARKS for r in rows]
    judged = [(j, [r for r, u in zip(rows, is_useful) if not u]) for j in judges]
    if any(is_useful):
        judged.append((usefulness, [r for r, u in zip(rows, is_useful) if u]))
    stamps = {j.name: config_hash(verdict_config(j)) for j in judges + [usefulness]}
    verdict_log = AppendLog(
        os.path.join(args.output_dir, "verdicts.jsonl"), lambda r: stamps.get(r["judge"]), key=verdict_key
    )
    t = time.time()
    for judge, judge_rows in judged:
        with tqdm(total=len(judge_rows), desc=f"judge {judge.name}", unit="response", dynamic_ncols=True) as progress:
            judge_responses(judge, judge_rows, verdict_log, stamps[judge.name], judge.batch_size, progress)
    verdict_log.close()
    manifest["judging_seconds"] = round(time.time() - t, 1)
    verdicts = [
        verdict_log.records[verdict_key({**r, "judge": j.name})] for j, judge_rows in judged for r in judge_rows
    ]
    # Per attacked prompt, the worst case over its attacks and variants (benchmark <set>@worst_case).
    metrics = compute_metrics(verdicts + worst_case_rows(verdicts), args.seed, args.bootstrap_resamples)
    write_json(
        os.path.join(args.output_dir, "metrics.json"),
        {
            "bootstrap": {"resamples": args.bootstrap_resamples, "seed": args.seed, "confidence": 0.95},
            "judges": [j.name for j, _ in judged],
            "items": {
                p: sorted(r["id"] for r in rows if r["policy"] == p) for p in sorted({r["policy"] for r in rows})
            },
            "metrics": metrics,
        },
    )
    write_json(os.path.join(args.output_dir, "manifest.json"), manifest)
    return metrics


def main(argv: List[str] = None):
    args = hierarchize(build_parser().parse_args(argv))
    try:
        metrics = run(args)
    except (EvaluationError, GenerationError, RecordError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)
    for line in headline_lines(metrics, sorted(metrics)):
        print(line)
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')}")


if __name__ == "__main__":
    main()

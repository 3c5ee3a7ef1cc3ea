"""Build the balanced Chain-of-Draft safety dataset: prompts for GRPO-S and (demonstration, policy sample) pairs for
the category reward models.

    python -m data_tools.build_dataset --output_dir runs/cod_data --gen.model Qwen/Qwen2-7B-Instruct \\
        --policy.model Qwen/Qwen2-7B-Instruct --data.n_per_category 100

Stages: load sources -> drop exact duplicates -> drop prompts overlapping the evaluation sets -> drop near duplicates
-> categorize (mapping tables, then the prototype classifier) -> per category a seeded order, the first N that get a
valid demonstration are kept -> seeded train/held-out split -> base-policy samples (the rejected side) -> CoT samples
for the token comparison -> output files, stats.json and stats.png.

Generation results are appended to OUTPUT_DIR/work/*.jsonl one line per record, and each request has a seed derived
from (--seed, stage, record id, attempt). A run killed at any point and started again with the same flags skips the
records already logged and writes the same files as an uninterrupted run.
"""

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from typing import Callable, Dict, List, Optional

from tqdm import tqdm

from data_tools.categorize import (
    DEFAULT_PROTOTYPES,
    DEFAULT_TAXONOMY_MAP,
    PrototypeClassifier,
    categorize,
    check_taxonomy_table,
    load_json_object,
)
from data_tools.cod_format import (
    DEFAULT_REFUSAL_PHRASES,
    PARAPHRASE_TEMPLATE,
    SEED_DEMONSTRATIONS,
    TEMPLATE_FILES,
    check_demonstration,
    has_refusal,
    load_refusal_phrases,
    load_seed_demonstrations,
    load_template,
    render_prompt,
)
from data_tools.generation_backends import BACKENDS, make_backend
from data_tools.prompt_sources import BUNDLED_EVAL_SETS, BUNDLED_SOURCES, SourceError, load_eval_prompts, load_source
from data_tools.similarity import (
    NEAR_DUP_METHODS,
    drop_near_duplicates,
    find_eval_overlap,
    load_minilm_encoder,
    normalize_text,
)
from openrlhf_drirl.contract import parse_categories

DEFAULT_NEAR_DUP_THRESHOLD = {"minilm": 0.9, "ngram": 0.6}
# Flags that change how fast a run goes, not what it writes: left out of the config hash, so a resume may change them.
SPEED_ONLY_FLAGS = {"output_dir", "gen_batch_size", "http_timeout", "http_retries", "http_concurrency", "plan_only"}


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
        "--gen.refusal_phrases",
        dest="refusal_phrases",
        metavar="TXT",
        default=DEFAULT_REFUSAL_PHRASES,
        help="one phrase per line; the answer after #### must contain one",
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

    add = parser.add_argument_group("cot: CoT samples from the generator, for the CoD vs CoT token count").add_argument
    add("--cot.n_per_category", dest="cot_n_per_category", type=int, default=4, help="prompts per category; 0 = off")
    add("--cot.max_new_tokens", dest="cot_max_new_tokens", type=int, default=1024, help="per CoT sample")

    add = parser.add_argument_group("serving: openai and vllm backends").add_argument
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

    args = parser.parse_args(argv)
    if args.near_dup_threshold is None:
        args.near_dup_threshold = DEFAULT_NEAR_DUP_THRESHOLD[args.near_dup_method]
    if not args.plan_only and (not args.gen_model or not args.policy_model):
        parser.error("--gen.model and --policy.model are required (or pass --plan_only)")
    if args.n_per_category is not None and args.n_per_category < 1:
        parser.error("--data.n_per_category must be at least 1 (leave it out for the smallest category's size)")
    if not 0 <= args.heldout_ratio < 1:
        parser.error("--data.heldout_ratio must be in [0, 1)")
    return args


class AppendLog:
    """Append-only JSONL keyed by record id. A line cut short by a kill is truncated away when reopened."""

    def __init__(self, path: str):
        self.path, self.records = path, {}
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) < len(data):
                with open(path, "r+b") as f:
                    f.truncate(len(complete))
            for line in complete.splitlines():
                record = json.loads(line)
                self.records[record["id"]] = record
        self.file = open(path, "a", encoding="utf-8")

    def append(self, records: List[dict]):
        for record in records:
            self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.records[record["id"]] = record
        self.file.flush()
        os.fsync(self.file.fileno())


def request_seed(seed: int, stage: str, record_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}:{stage}:{record_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def write_jsonl(path: str, rows: List[dict]):
    # Derived files are rewritten whole each run: write aside, then rename, so a kill never leaves half a file.
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def generate_logged(
    backend,
    stage: str,
    records: List[dict],
    log: AppendLog,
    make_prompt: Callable[[dict], str],
    check: Callable[[str], Optional[str]],
    max_attempts: int,
    max_new_tokens: int,
    temperature: float,
    args,
    progress: tqdm,
):
    """Generate for the records not yet in ``log``, retrying invalid outputs; one log line per record."""
    todo = [r for r in records if r["id"] not in log.records]
    progress.update(len(records) - len(todo))
    for start in range(0, len(todo), args.gen_batch_size):
        chunk = todo[start : start + args.gen_batch_size]
        results = {r["id"]: {"id": r["id"], "status": "failed", "invalid": []} for r in chunk}
        pending, started = chunk, time.time()
        for attempt in range(max_attempts):
            seeds = [request_seed(args.seed, stage, r["id"], attempt) for r in pending]
            outputs = backend.generate([make_prompt(r) for r in pending], seeds, max_new_tokens, temperature)
            retry = []
            for record, (text, tokens) in zip(pending, outputs):
                reason, result = check(text), results[record["id"]]
                if reason is None:
                    result.update(status="ok", text=text, tokens=tokens, attempt=attempt)
                else:
                    result["invalid"].append({"attempt": attempt, "text": text, "tokens": tokens, "reason": reason})
                    retry.append(record)
            pending = retry
            if not pending:
                break
        seconds = round((time.time() - started) / len(chunk), 4)
        log.append([{**results[r["id"]], "seconds": seconds} for r in chunk])
        progress.update(len(chunk))


def paraphrase_shortfalls(candidates, n, generator, log, eval_prompts, args, encoder):
    """Paraphrases of each short category's prompts (cycling through them) until it has ``n`` candidates.

    A paraphrase is kept when it is not empty, not a refusal, and neither overlaps an evaluation prompt nor nearly
    duplicates any prompt kept so far (same measure and threshold as the rest of the pipeline).
    """
    template, phrases = load_template(PARAPHRASE_TEMPLATE), load_refusal_phrases(args.refusal_phrases)
    existing = [r for rows in candidates.values() for r in rows]
    requests = []
    for rows in candidates.values():
        for i in range(n - len(rows) if rows else 0):
            original = rows[i % len(rows)]
            requests.append({"id": f"{original['id']}-para{i // len(rows)}", "original": original})
    with tqdm(total=len(requests), desc="paraphrases", unit="rec", dynamic_ncols=True) as progress:
        generate_logged(
            generator,
            "paraphrase",
            requests,
            log,
            lambda r: template.render(prompt=r["original"]["prompt"]).strip(),
            lambda text: None if text.strip() and not has_refusal(text, phrases) else "empty or refused",
            args.max_attempts,
            args.gen_max_new_tokens,
            args.gen_temperature,
            args,
            progress,
        )
    made = [
        {
            **r["original"],
            "id": r["id"],
            "prompt": log.records[r["id"]]["text"],
            "source": r["original"]["source"] + "+paraphrase",
            "paraphrase_of": r["original"]["id"],
        }
        for r in requests
        if log.records[r["id"]]["status"] == "ok"
    ]
    made, overlapping = find_eval_overlap(made, eval_prompts, args.near_dup_method, args.near_dup_threshold, encoder)
    kept, duplicates = drop_near_duplicates(existing + made, args.near_dup_method, args.near_dup_threshold, encoder)
    kept_ids = {r["id"] for r in kept}
    for r in made:
        if r["id"] in kept_ids:
            candidates[r["category"]].append(r)
    return overlapping + duplicates  # the existing prompts are already free of near duplicates


def select_with_demonstrations(candidates: Dict[str, List[dict]], n: int, generate: Callable[[List[dict]], None], log):
    """Per category, the first ``n`` candidates (in their seeded order) whose demonstration is valid.

    Works in waves: each wave asks for as many next candidates as each category still lacks, so invalid ones are
    replaced by the following candidates and the result does not depend on where an earlier run stopped.
    """
    accepted = {c: [] for c in candidates}
    cursor = {c: 0 for c in candidates}
    while True:
        wave = {c: rows[cursor[c] : cursor[c] + n - len(accepted[c])] for c, rows in candidates.items()}
        if not any(wave.values()):
            return accepted
        generate([r for rows in wave.values() for r in rows])
        for c, rows in wave.items():
            cursor[c] += len(rows)
            accepted[c] += [r for r in rows if log.records[r["id"]]["status"] == "ok"]


def plot_stats(stats: dict, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories = list(stats["per_category"])
    train = [stats["per_category"][c]["train"] for c in categories]
    heldout = [stats["per_category"][c]["heldout"] for c in categories]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    left.bar(categories, train, label="train")
    left.bar(categories, heldout, bottom=train, label="held-out")
    left.set_ylabel("records")
    left.set_title("records per category")
    left.tick_params(axis="x", labelrotation=35)
    left.legend()
    tokens = stats["tokens"]
    names = [k for k in ("cod", "cot") if tokens.get(k, {}).get("n")]
    right.bar(
        [k.upper() for k in names], [tokens[k]["mean"] for k in names], color=["tab:green", "tab:red"][: len(names)]
    )
    right.set_ylabel("mean generated tokens")
    right.set_title("tokens per demonstration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def token_summary(results: List[dict]) -> dict:
    tokens = [r["tokens"] for r in results if r.get("tokens") is not None]
    words = [len(r["text"].split()) for r in results]
    seconds = [r["seconds"] for r in results]
    if not results:
        return {"n": 0}
    return {
        "n": len(results),
        "mean": round(statistics.mean(tokens), 2) if tokens else None,
        "median": statistics.median(tokens) if tokens else None,
        "mean_words": round(statistics.mean(words), 2),
        "mean_seconds_per_record": round(statistics.mean(seconds), 4),
    }


def build(args):
    started = time.time()
    timings = {}
    categories = parse_categories(args.categories)
    os.makedirs(os.path.join(args.output_dir, "work"), exist_ok=True)

    # Load, filter and categorize. Deterministic and cheap, so it is recomputed on every run (also when resuming).
    records = []
    try:
        for spec in args.sources:
            records += load_source(spec)
        eval_prompts = [e for spec in args.eval_sets for e in load_eval_prompts(spec)]
    except SourceError as e:
        raise SystemExit(f"error: {e}") from None
    taxonomy_map = load_json_object(args.taxonomy_map, "--data.taxonomy_map")
    used_tables = sorted({r["taxonomy"] for r in records} - {None, "categories"})
    tables = {t: check_taxonomy_table(taxonomy_map, t, categories, args.taxonomy_map) for t in used_tables}

    first_id, unique, exact_duplicates = {}, [], []
    for record in records:
        key = normalize_text(record["prompt"])
        if key in first_id:
            exact_duplicates.append({**record, "duplicate_of": first_id[key], "similarity": 1.0})
        else:
            first_id[key] = record["id"]
            unique.append(record)

    need_encoder = args.classifier == "minilm" or args.near_dup_method == "minilm"
    encoder = load_minilm_encoder() if need_encoder else None
    clean, eval_overlap = find_eval_overlap(
        unique, eval_prompts, args.near_dup_method, args.near_dup_threshold, encoder
    )
    kept, near_duplicates = drop_near_duplicates(clean, args.near_dup_method, args.near_dup_threshold, encoder)
    classifier = None
    if args.classifier == "minilm":
        prototypes = load_json_object(args.prototypes, "--data.prototypes")
        classifier = PrototypeClassifier(encoder, prototypes, categories, args.classifier_threshold)
    categorized, unmapped = categorize(kept, categories, tables, classifier)
    timings["prepare"] = round(time.time() - started, 2)

    candidates = {}
    for c in categories:
        rows = sorted((r for r in categorized if r["category"] == c), key=lambda r: r["id"])
        random.Random(f"{args.seed}:{c}").shuffle(rows)
        candidates[c] = rows
    n = args.n_per_category
    if n is None:
        empty = [c for c, rows in candidates.items() if not rows]
        if empty:
            raise SystemExit(
                f"categories {empty} got no prompts, so the balanced size would be 0: add a source for them, drop "
                "them from --data.categories, or set --data.n_per_category to build with shortfalls"
            )
        n = min(len(rows) for rows in candidates.values())

    out = args.output_dir
    write_jsonl(os.path.join(out, "eval_overlap.jsonl"), eval_overlap)
    write_jsonl(os.path.join(out, "duplicates.jsonl"), exact_duplicates + near_duplicates)
    write_jsonl(os.path.join(out, "unmapped.jsonl"), unmapped)

    hashed = {k: v for k, v in sorted(vars(args).items()) if k not in SPEED_ONLY_FLAGS}
    hashed["files"] = {
        name: file_sha256(path)
        for name, path in [
            ("taxonomy_map", args.taxonomy_map),
            ("prototypes", args.prototypes),
            ("template", TEMPLATE_FILES.get(args.gen_template, args.gen_template)),
            ("cot_template", TEMPLATE_FILES["cot"]),
            ("refusal_phrases", args.refusal_phrases),
            ("seed_demonstrations", args.seed_demonstrations),
        ]
    }
    candidate_ids = json.dumps({c: [r["id"] for r in rows] for c, rows in candidates.items()})
    hashed["candidates"] = hashlib.sha256(candidate_ids.encode()).hexdigest()  # catches edited source files
    config_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    manifest_path = os.path.join(out, "manifest.json")
    manifest = {"config_hash": config_hash, "seed": args.seed, "config": hashed, "runs": []}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            previous = json.load(f)
        if previous["config_hash"] != config_hash:
            raise SystemExit(
                f"{out} holds a run with config hash {previous['config_hash']}, this one is {config_hash} (flags, "
                "sources or template files differ): rerun with the same flags to resume, or use a new --output_dir"
            )
        manifest["runs"] = previous["runs"]
    run_entry = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "argv": sys.argv[1:]}
    manifest["runs"].append(run_entry)
    write_json(manifest_path, manifest)

    counts = {
        "loaded": len(records),
        "exact_duplicates": len(exact_duplicates),
        "eval_overlap": len(eval_overlap),
        "near_duplicates": len(near_duplicates),
        "unmapped": len(unmapped),
        "categorized": len(categorized),
        "n_per_category": n,
    }
    print(f"[build_dataset] {json.dumps(counts)}", flush=True)
    if args.plan_only:
        plan = [{**r, "order": i} for c in categories for i, r in enumerate(candidates[c][:n])]
        write_jsonl(os.path.join(out, "plan.jsonl"), plan)
        reasons = Counter(r["unmapped_reason"].split(":")[0] for r in unmapped)
        stats = {"config_hash": config_hash, "counts": counts, "unmapped_reasons": dict(reasons.most_common())}
        stats["per_category"] = {
            c: {"candidates": len(candidates[c]), "planned": min(n, len(candidates[c]))} for c in categories
        }
        write_json(os.path.join(out, "stats.json"), stats)
        return stats

    # Generation: demonstrations (selecting the first n valid per category), base-policy samples, CoT samples.
    phrases = load_refusal_phrases(args.refusal_phrases)
    seeds = load_seed_demonstrations(args.seed_demonstrations)
    template, cot_template = load_template(args.gen_template), load_template("cot")
    draft_limit = None if args.gen_template == "cot" else args.max_draft_words
    demo_log = AppendLog(os.path.join(out, "work", "demonstrations.jsonl"))
    policy_log = AppendLog(os.path.join(out, "work", "policy_samples.jsonl"))
    cot_log = AppendLog(os.path.join(out, "work", "cot_samples.jsonl"))
    api_key = os.environ.get(args.gen_api_key_env)

    def demo_prompt(record):
        examples = seeds.get(record["category"], [])[: args.num_examples]
        return render_prompt(template, record["prompt"], examples, args.max_draft_words)

    t = time.time()
    generator = make_backend(args.gen_backend, args.gen_model, args.gen_url, api_key, args)
    if args.paraphrase_fill:
        paraphrase_log = AppendLog(os.path.join(out, "work", "paraphrases.jsonl"))
        dropped = paraphrase_shortfalls(candidates, n, generator, paraphrase_log, eval_prompts, args, encoder)
        write_jsonl(os.path.join(out, "paraphrases_dropped.jsonl"), dropped)
        counts["paraphrases_dropped"] = len(dropped)
        timings["paraphrases"] = round(time.time() - t, 2)
    with tqdm(total=n * len(categories), desc="demonstrations", unit="rec", dynamic_ncols=True) as progress:

        def generate_demonstrations(rows):
            progress.total = max(progress.total, progress.n + len(rows))
            generate_logged(
                generator,
                "demo",
                rows,
                demo_log,
                demo_prompt,
                lambda text: check_demonstration(text, phrases, draft_limit),
                args.max_attempts,
                args.gen_max_new_tokens,
                args.gen_temperature,
                args,
                progress,
            )

        accepted = select_with_demonstrations(candidates, n, generate_demonstrations, demo_log)
    timings["demonstrations"] = round(time.time() - t, 2)

    t = time.time()
    cot_rows = [r for c in categories for r in accepted[c][: args.cot_n_per_category]]
    with tqdm(total=len(cot_rows), desc="cot samples", unit="rec", dynamic_ncols=True) as progress:
        generate_logged(
            generator,
            "cot",
            cot_rows,
            cot_log,
            lambda r: render_prompt(cot_template, r["prompt"], (), args.max_draft_words),
            lambda text: None,  # kept as sampled: only measured, validity is reported in stats
            1,
            args.cot_max_new_tokens,
            args.gen_temperature,
            args,
            progress,
        )
    timings["cot_samples"] = round(time.time() - t, 2)
    del generator

    t = time.time()
    policy_key = os.environ.get(args.policy_api_key_env)
    policy = make_backend(args.policy_backend, args.policy_model, args.policy_url, policy_key, args)
    selected = [r for c in categories for r in accepted[c]]
    with tqdm(total=len(selected), desc="policy samples", unit="rec", dynamic_ncols=True) as progress:
        generate_logged(
            policy,
            "policy",
            selected,
            policy_log,
            lambda r: r["prompt"],
            lambda text: None if text.strip() else "empty output",
            args.max_attempts,
            args.policy_max_new_tokens,
            args.policy_temperature,
            args,
            progress,
        )
    del policy
    timings["policy_samples"] = round(time.time() - t, 2)

    # Outputs, all derived from the logs in the seeded order.
    splits = {"train": [], "heldout": []}
    per_category = {}
    for c in categories:
        # At least one held-out record per category whenever a split is asked for and there are two to split.
        k = round(len(accepted[c]) * args.heldout_ratio)
        k = max(k, 1) if args.heldout_ratio > 0 and len(accepted[c]) >= 2 else k
        splits["heldout"] += accepted[c][:k]
        splits["train"] += accepted[c][k:]
        tried = [demo_log.records[r["id"]] for r in candidates[c] if r["id"] in demo_log.records]
        per_category[c] = {
            "candidates": len(candidates[c]),
            "paraphrases": sum("-para" in r["id"] for r in candidates[c]),
            "selected": len(accepted[c]),
            "train": len(accepted[c]) - k,
            "heldout": k,
            "shortfall": n - len(accepted[c]),
            "generated": len(tried),
            "invalid_outputs": sum(len(d["invalid"]) for d in tried),
            "failed_records": sum(d["status"] != "ok" for d in tried),
            "policy_failed": sum(policy_log.records[r["id"]]["status"] != "ok" for r in accepted[c]),
        }
    for split, rows in splits.items():
        prompts, pairs = [], []
        for r in rows:
            demonstration = demo_log.records[r["id"]]["text"]
            label = {"category": r["category"], "demonstration": demonstration, "id": r["id"], "source": r["source"]}
            prompts.append({"prompt": r["prompt"], "label": label})
            sample = policy_log.records[r["id"]]
            if sample["status"] == "ok":
                pairs.append(
                    {
                        "id": r["id"],
                        "prompt": r["prompt"],
                        "category": r["category"],
                        "chosen": demonstration,
                        "rejected": sample["text"],
                    }
                )
        write_jsonl(os.path.join(out, f"prompts.{split}.jsonl"), prompts)
        write_jsonl(os.path.join(out, f"irl_pairs.{split}.jsonl"), pairs)

    rejects = []
    by_id = {r["id"]: r for rows in candidates.values() for r in rows}
    for stage, log in (("demo", demo_log), ("policy", policy_log)):
        for record_id, result in log.records.items():
            for bad in result["invalid"]:
                record = by_id[record_id]
                rejects.append(
                    {
                        "stage": stage,
                        "id": record_id,
                        "category": record["category"],
                        "prompt": record["prompt"],
                        **bad,
                    }
                )
    rejects.sort(key=lambda r: (r["stage"], r["id"], r["attempt"]))
    write_jsonl(os.path.join(out, "rejects.jsonl"), rejects)

    cod_results = [demo_log.records[r["id"]] for r in selected]
    cot_results = [cot_log.records[r["id"]] for r in cot_rows]
    tokens = {"cod": token_summary(cod_results), "cot": token_summary(cot_results)}
    tokens["cot_valid_fraction"] = (
        round(sum(check_demonstration(r["text"], phrases, None) is None for r in cot_results) / len(cot_results), 3)
        if cot_results
        else None
    )
    if tokens["cod"].get("mean") and tokens["cot"].get("mean"):
        tokens["cot_over_cod"] = round(tokens["cot"]["mean"] / tokens["cod"]["mean"], 2)
    timings["total_this_run"] = round(time.time() - started, 2)
    stats = {
        "config_hash": config_hash,
        "seed": args.seed,
        "counts": {
            **counts,
            "train": len(splits["train"]),
            "heldout": len(splits["heldout"]),
            "rejects": len(rejects),
        },
        "per_category": per_category,
        "unmapped_reasons": dict(Counter(r["unmapped_reason"].split(":")[0] for r in unmapped).most_common()),
        "invalid_reasons": dict(Counter(r["reason"].split(":")[0] for r in rejects).most_common()),
        "refusals_in_policy_samples": sum(
            has_refusal(policy_log.records[r["id"]].get("text", ""), phrases) for r in selected
        ),
        "tokens": tokens,
        "seconds": timings,
    }
    write_json(os.path.join(out, "stats.json"), stats)
    plot_stats(stats, os.path.join(out, "stats.png"))
    run_entry.update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), counts=stats["counts"])
    write_json(manifest_path, manifest)
    return stats


def write_json(path: str, data: dict):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
    os.replace(path + ".tmp", path)


def main(argv=None):
    args = parse_args(argv)
    stats = build(args)
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

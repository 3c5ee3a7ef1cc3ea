"""Generation that survives a kill: paraphrase fill, demonstrations, CoT samples, base-policy samples.

Each request's seed comes from (--seed, stage, record id, attempt), and a record's result is appended to its
OUTPUT_DIR/work/*.jsonl log as one line, stamped with the config hash, once its retries are done. A rerun skips the
logged records, so a run killed at any point and started again with the same flags logs what an uninterrupted run
logs; a record of another config stops it.
"""

import contextlib
import hashlib
import os
import time
from typing import Callable, Dict, List, NamedTuple, Optional

from tqdm import tqdm

from data_tools import DatasetBuildError
from data_tools.cod_format import (
    DRAFT_SLOTS,
    PARAPHRASE_TEMPLATE,
    REFUSAL_OPENING,
    category_line,
    check_demonstration,
    cut_draft,
    cut_refusal,
    draft_fits,
    has_refusal,
    load_refusal_phrases,
    load_seed_demonstrations,
    load_template,
    prompt_fallback,
    render_prompt,
)
from data_tools.plan import Plan
from data_tools.similarity import drop_near_duplicates, find_eval_overlap
from openrlhf_drirl.contract import CATEGORY_KEY, COD_SEPARATOR, PROMPT_KEY
from openrlhf_drirl.generation import Generation, GenerationError, build_generator
from openrlhf_drirl.generation.vllm_engine import shutdown
from openrlhf_drirl.records import AppendLog

# The work logs of OUTPUT_DIR/work/, checked together before a run writes anything.
WORK_LOGS = ("paraphrases", "demonstrations", "cot_samples", "policy_samples")


def request_seed(seed: int, stage: str, record_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}:{stage}:{record_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def heldout_count(n_records: int, heldout_ratio: float) -> int:
    """How many of a category's kept records are held out (its first ones, in their seeded order): round(n * ratio),
    at least one whenever a split is asked for and there are two to split."""
    k = round(n_records * heldout_ratio)
    return max(k, 1) if heldout_ratio > 0 and n_records >= 2 else k


def policy_sample_ids(args, accepted: Dict[str, List[dict]]) -> Dict[str, List[str]]:
    """Per kept record (``accepted``: per category, in the seeded order), the policy-log keys of its samples:
    ``--policy.n_samples``, or ``--policy.heldout_n_samples`` for a held-out record when that is set. The first key is
    the record's own id (so logs of one-sample runs stay valid), the others ``<id>#<j>``, each with its own seed
    (``request_seed`` of the key): a record's samples do not depend on how many the others get."""
    ids = {}
    for records in accepted.values():
        k = heldout_count(len(records), args.heldout_ratio)
        for i, r in enumerate(records):
            n = args.policy_heldout_n_samples if i < k and args.policy_heldout_n_samples else args.policy_n_samples
            ids[r["id"]] = [r["id"]] + [f"{r['id']}#{j}" for j in range(1, n)]
    return ids


def generate_logged(
    generator,
    stage: str,
    records: List[dict],
    log: AppendLog,
    make_prompt: Callable[[dict], str],
    check: Callable[[str, dict], Optional[str]],
    max_attempts: int,
    max_new_tokens: int,
    temperature: float,
    args,
    progress: tqdm,
    fallback: Optional[Callable[[dict], str]] = None,
):
    """Generate for the records not yet in ``log``, retrying invalid outputs (``check(text, record)`` gives the
    reason, None when valid); one log line per record. A record still invalid after ``max_attempts`` gets
    ``fallback(record)`` as its text (``"fallback": true``) when given."""
    todo = [r for r in records if r["id"] not in log.records]
    progress.update(len(records) - len(todo))
    for start in range(0, len(todo), args.gen_batch_size):
        chunk = todo[start : start + args.gen_batch_size]
        results = {r["id"]: {"id": r["id"], "status": "failed", "invalid": []} for r in chunk}
        pending, started = chunk, time.time()
        for attempt in range(max_attempts):
            outputs = generator.generate(
                [make_prompt(r) for r in pending],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seeds=[request_seed(args.seed, stage, r["id"], attempt) for r in pending],
            )
            retry = []
            for record, output in zip(pending, outputs):
                text, tokens = output.text.strip(), output.num_tokens
                reason, result = check(text, record), results[record["id"]]
                if reason is None:
                    result.update(status="ok", text=text, tokens=tokens, attempt=attempt)
                else:
                    result["invalid"].append({"attempt": attempt, "text": text, "tokens": tokens, "reason": reason})
                    retry.append(record)
            pending = retry
            if not pending:
                break
        for record in pending if fallback else ():
            results[record["id"]].update(status="ok", text=fallback(record), tokens=None, fallback=True)
        seconds = round((time.time() - started) / len(chunk), 4)
        log.append([{**results[r["id"]], "seconds": seconds} for r in chunk])
        progress.update(len(chunk))


def paraphrase_shortfalls(plan: Plan, generator, log: AppendLog, args) -> List[dict]:
    """Paraphrases of each short category's prompts (cycling through them), appended to ``plan.candidates`` until the
    category has ``plan.n``; returns the paraphrases dropped.

    A paraphrase is kept when it is not empty, not a refusal, and neither overlaps an evaluation prompt nor nearly
    duplicates any prompt kept so far (same measure and threshold as the rest of the pipeline).
    """
    template, phrases = load_template(PARAPHRASE_TEMPLATE), load_refusal_phrases(args.refusal_phrases)
    candidates = plan.candidates
    existing = [r for rows in candidates.values() for r in rows]
    requests = []
    for rows in candidates.values():
        for i in range(plan.n - len(rows) if rows else 0):
            original = rows[i % len(rows)]
            requests.append({"id": f"{original['id']}-para{i // len(rows)}", "original": original})
    with tqdm(total=len(requests), desc="paraphrases", unit="rec", dynamic_ncols=True) as progress:
        generate_logged(
            generator,
            "paraphrase",
            requests,
            log,
            lambda r: template.render(prompt=r["original"][PROMPT_KEY]).strip(),
            lambda text, r: None if text.strip() and not has_refusal(text, phrases) else "empty or refused",
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
            PROMPT_KEY: log.records[r["id"]]["text"],
            "source": r["original"]["source"] + "+paraphrase",
            "paraphrase_of": r["original"]["id"],
        }
        for r in requests
        if log.records[r["id"]]["status"] == "ok"
    ]
    method, threshold = args.near_dup_method, args.near_dup_threshold
    made, overlapping = find_eval_overlap(made, plan.eval_prompts, method, threshold, plan.encoder)
    kept, duplicates = drop_near_duplicates(existing + made, method, threshold, plan.encoder)
    kept_ids = {r["id"] for r in kept}
    for r in made:
        if r["id"] in kept_ids:
            candidates[r[CATEGORY_KEY]].append(r)
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


class PrefilledCoD:
    """``--gen.cod_mode prefilled``: a demonstration assembled from constrained continuations of a raw-text
    generator (chat=False). A request is (the chat-formatted CoD prompt, the record's category, its prompt). Each slot
    of ``DRAFT_SLOTS`` is one batched call sampling ``CANDIDATES`` continuations (a few tokens, cut at the first line
    to ``max_draft_words``), of which the first acceptable one is kept (not empty, not a repeat, and while no draft
    names the request yet, sharing a content word with the prompt); then the builder writes the category line and the
    separator and one more call continues ``REFUSAL_OPENING`` (cut after a sentence). Every continuation has its own
    seed derived from the request's, so a request's text depends on its seed alone. ``num_tokens`` counts the whole
    assembled text, as if the model had written it (the CoD vs CoT comparison)."""

    DRAFT_TOKENS = 12  # a 5-word draft step is about 8 tokens; the rest of the line is cut anyway
    CANDIDATES = 4  # per draft slot: one call, 4 rows per request

    def __init__(self, generator, max_draft_words: int):
        self.generator, self.max_draft_words = generator, max_draft_words
        self.tokenizer = generator.tokenizer if hasattr(generator, "tokenizer") else generator.llm.get_tokenizer()

    def chat_text(self, user: str) -> str:
        """``user`` as the user turn of the model's chat template, ending where the assistant's answer starts."""
        messages = [{"role": "user", "content": user}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests, *, max_new_tokens: int, temperature: float, seeds: List[int]) -> List[Generation]:
        def continue_all(prefixes, step_seeds, tokens):
            outputs = self.generator.generate(
                prefixes, max_new_tokens=tokens, temperature=temperature, seeds=[s & 0x7FFFFFFF for s in step_seeds]
            )
            return [o.text for o in outputs]

        k, drafts = self.CANDIDATES, [[] for _ in requests]
        for step, slot in enumerate(DRAFT_SLOTS):
            prefixes = [chat + "\n".join(d + [slot]) for (chat, _, _), d in zip(requests, drafts)]
            texts = continue_all(
                [p for p in prefixes for _ in range(k)],
                [seed + 7919 * step + 104729 * j for seed in seeds for j in range(k)],
                min(max_new_tokens, self.DRAFT_TOKENS),
            )
            for i, ((_, _, prompt), d) in enumerate(zip(requests, drafts)):
                candidates = [cut_draft(slot, text, self.max_draft_words) for text in texts[i * k : (i + 1) * k]]
                d.append(next((c for c in candidates if draft_fits(c, d, prompt)), candidates[0]))
        heads = [
            "\n".join(d + [category_line(category), COD_SEPARATOR, REFUSAL_OPENING])
            for (_, category, _), d in zip(requests, drafts)
        ]
        # One sentence is kept: a few dozen tokens are enough, and a longer budget only costs time.
        answers = continue_all(
            [chat + h for (chat, _, _), h in zip(requests, heads)],
            [seed + 7919 * len(DRAFT_SLOTS) for seed in seeds],
            min(max_new_tokens, 40),
        )
        results = []
        for head, answer in zip(heads, answers):
            text = head[: -len(REFUSAL_OPENING)] + cut_refusal(REFUSAL_OPENING, answer)
            results.append(Generation(text, len(self.tokenizer(text, add_special_tokens=False)["input_ids"]), "stop"))
        return results


def make_generator(args, role: str):
    """The generator of ``role`` ("gen" or "policy"), from its --ROLE.* flags and the backend's own flags."""
    backend, model = getattr(args, f"{role}_backend"), getattr(args, f"{role}_model")
    if backend == "openai":
        kwargs = {
            "api_key": os.environ.get(getattr(args, f"{role}_api_key_env")),
            "timeout": args.http_timeout,
            "retries": args.http_retries,
            "concurrency": args.http_concurrency,
        }
    elif backend == "vllm":
        kwargs = {
            "tensor_parallel_size": args.vllm_tensor_parallel_size,
            "gpu_memory_utilization": args.vllm_gpu_memory_utilization,
            "max_model_len": args.vllm_max_model_len,
        }
    else:
        kwargs = {"batch_size": args.hf_batch_size}
    if role == "gen" and args.gen_cod_mode == "prefilled":
        kwargs["chat"] = False  # PrefilledCoD applies the chat template and continues the assistant's text
    try:
        return build_generator(backend, model, url=getattr(args, f"{role}_url"), **kwargs)
    except OSError as e:  # transformers: no such folder or hub name
        raise DatasetBuildError(
            f"--{role}.model {model!r} cannot be loaded ({e}): pass a model folder or name"
        ) from None


@contextlib.contextmanager
def naming_role(role: str):
    """A generation error says which model failed and which flags set it up."""
    try:
        yield
    except GenerationError as e:
        raise DatasetBuildError(
            f"{'generator' if role == 'gen' else 'base policy'}: {e} [set by --{role}.backend, --{role}.model, "
            f"--{role}.url, --{role}.api_key_env]"
        ) from None


class Generated(NamedTuple):
    accepted: Dict[str, List[dict]]  # per category, the records with a valid demonstration, in the seeded order
    benign: Dict[str, List[dict]]  # the same for --data.benign_sources: their "demonstration" is the refusal to avoid
    cot_rows: List[dict]  # the records that also got a CoT sample
    demo_log: AppendLog
    cot_log: AppendLog
    policy_log: AppendLog
    paraphrases_dropped: Optional[List[dict]]  # None without --data.paraphrase_fill


def run_generation(args, plan: Plan, logs: Dict[str, AppendLog], timings: dict) -> Generated:
    """Paraphrases (with --data.paraphrase_fill), demonstrations selecting the first N valid per category, CoT samples
    from the generator, then base-policy samples, each into its log of ``logs`` (keys: WORK_LOGS); each stage's seconds
    go to ``timings``."""
    phrases = load_refusal_phrases(args.refusal_phrases)
    seeds = load_seed_demonstrations(args.seed_demonstrations)
    template, cot_template = load_template(args.gen_template), load_template("cot")
    draft_limit = None if args.gen_template == "cot" else args.max_draft_words
    demo_log, cot_log, policy_log = logs["demonstrations"], logs["cot_samples"], logs["policy_samples"]
    dropped = None

    def demo_prompt(record):
        examples = seeds.get(record[CATEGORY_KEY], [])[: args.num_examples]
        text = render_prompt(template, record[PROMPT_KEY], examples, args.max_draft_words)
        return (prefilled.chat_text(text), record[CATEGORY_KEY], record[PROMPT_KEY]) if prefilled else text

    def cot_prompt(record):
        text = render_prompt(cot_template, record[PROMPT_KEY], (), args.max_draft_words)
        return prefilled.chat_text(text) if prefilled else text

    def check(text, record):
        return check_demonstration(text, phrases, draft_limit, record[PROMPT_KEY])

    def fallback(record):  # built from this record's own prompt, never another request's demonstration
        return prompt_fallback(record[PROMPT_KEY], record[CATEGORY_KEY], args.max_draft_words)

    t = time.time()
    with naming_role("gen"):
        generator = make_generator(args, "gen")
        prefilled = PrefilledCoD(generator, args.max_draft_words) if args.gen_cod_mode == "prefilled" else None
        if args.paraphrase_fill:
            dropped = paraphrase_shortfalls(plan, generator, logs["paraphrases"], args)
            timings["paraphrases"] = round(time.time() - t, 2)
        total = (plan.n + plan.benign_n) * len(plan.categories)
        with tqdm(total=total, desc="demonstrations", unit="rec", dynamic_ncols=True) as bar:

            def generate_demonstrations(rows):
                bar.total = max(bar.total, bar.n + len(rows))
                generate_logged(
                    prefilled or generator,
                    "demo",
                    rows,
                    demo_log,
                    demo_prompt,
                    check,
                    args.max_attempts,
                    args.gen_max_new_tokens,
                    args.gen_temperature,
                    args,
                    bar,
                    fallback if args.demo_fallback == "prompt" else None,
                )

            accepted = select_with_demonstrations(plan.candidates, plan.n, generate_demonstrations, demo_log)
            # A benign prompt's refusal, written the same way as a harmful prompt's, is its IRL pair's rejected side.
            benign = select_with_demonstrations(
                plan.benign_candidates, plan.benign_n, generate_demonstrations, demo_log
            )
        timings["demonstrations"] = round(time.time() - t, 2)

        t = time.time()
        cot_rows = [r for c in plan.categories for r in accepted[c][: args.cot_n_per_category]]
        with tqdm(total=len(cot_rows), desc="cot samples", unit="rec", dynamic_ncols=True) as bar:
            generate_logged(
                generator,
                "cot",
                cot_rows,
                cot_log,
                cot_prompt,
                lambda text, r: None,  # kept as sampled: only measured, validity is reported in stats
                1,
                args.cot_max_new_tokens,
                args.gen_temperature,
                args,
                bar,
            )
        timings["cot_samples"] = round(time.time() - t, 2)
    shutdown(generator)  # frees its memory before the policy loads
    del generator

    t = time.time()
    with naming_role("policy"):
        policy = make_generator(args, "policy")
        sample_ids = {**policy_sample_ids(args, accepted), **policy_sample_ids(args, benign)}
        kept = [r for c in plan.categories for r in accepted[c] + benign.get(c, [])]
        samples = [{**r, "id": i} for r in kept for i in sample_ids[r["id"]]]
        with tqdm(total=len(samples), desc="policy samples", unit="sample", dynamic_ncols=True) as bar:
            generate_logged(
                policy,
                "policy",
                samples,
                policy_log,
                lambda r: r[PROMPT_KEY],
                lambda text, r: None if text.strip() else "empty output",
                args.max_attempts,
                args.policy_max_new_tokens,
                args.policy_temperature,
                args,
                bar,
            )
    shutdown(policy)
    del policy
    timings["policy_samples"] = round(time.time() - t, 2)
    return Generated(accepted, benign, cot_rows, demo_log, cot_log, policy_log, dropped)

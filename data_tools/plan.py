"""The plan: which prompts each category gets, in which order. Exactly what ``--plan_only`` runs.

load sources -> drop exact duplicates -> drop prompts overlapping the evaluation sets -> drop near duplicates ->
categorize (mapping tables, then the prototype classifier) -> per category a seeded order -> the balanced size N.
Deterministic and needs no generator, so every run (a resume too) recomputes it.
"""

import random
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

from data_tools import DatasetBuildError
from data_tools.categorize import PrototypeClassifier, categorize, check_taxonomy_table, load_json_object
from data_tools.prompt_sources import load_eval_prompts, load_source
from data_tools.similarity import drop_near_duplicates, find_eval_overlap, load_minilm_encoder, normalize_text
from openrlhf_drirl.contract import BENIGN_KEY, CATEGORY_KEY, PROMPT_KEY, parse_categories


class Plan(NamedTuple):
    categories: Sequence[str]
    candidates: Dict[str, List[dict]]  # per category in the seeded order; the paraphrase fill appends to it
    n: int  # records wanted per category
    counts: dict  # records left at each step, for stats.json
    eval_overlap: List[dict]  # dropped, each with the evaluation prompt it matched
    duplicates: List[dict]  # dropped: the exact duplicates, then the near duplicates
    unmapped: List[dict]  # no category, each with the reason
    eval_prompts: List[dict]  # the paraphrase fill checks new prompts against them too
    encoder: Optional[Callable]  # MiniLM, when the classifier or the near-duplicate check uses it
    benign_candidates: Dict[str, List[dict]]  # --data.benign_sources per category in the seeded order ({} when off)
    benign_n: int  # --data.benign_per_category


def make_plan(args) -> Plan:
    try:
        categories = parse_categories(args.categories)
    except ValueError as e:
        raise DatasetBuildError(f"--data.categories {args.categories!r}: {e}") from None
    records = [r for spec in args.sources for r in load_source(spec)]
    benign_specs = args.benign_sources if args.benign_per_category else []
    benign_records = [{**r, BENIGN_KEY: True} for spec in benign_specs for r in load_source(spec)]
    eval_prompts = [e for spec in args.eval_sets for e in load_eval_prompts(spec)]
    taxonomy_map = load_json_object(args.taxonomy_map, "--data.taxonomy_map")
    used_tables = sorted({r["taxonomy"] for r in records + benign_records} - {None, "categories"})
    tables = {t: check_taxonomy_table(taxonomy_map, t, categories, args.taxonomy_map) for t in used_tables}

    first_id, unique, exact_duplicates = {}, [], []
    for record in records + benign_records:
        key = normalize_text(record[PROMPT_KEY])
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

    def seeded_order(category: str, benign: bool, salt: str) -> List[dict]:
        rows = [r for r in categorized if r[CATEGORY_KEY] == category and bool(r.get(BENIGN_KEY)) == benign]
        rows.sort(key=lambda r: r["id"])
        random.Random(salt).shuffle(rows)
        return rows

    candidates = {c: seeded_order(c, False, f"{args.seed}:{c}") for c in categories}
    benign_candidates = {c: seeded_order(c, True, f"{args.seed}:benign:{c}") for c in categories if benign_records}
    n = args.n_per_category
    if n is None:
        empty = [c for c, rows in candidates.items() if not rows]
        if empty:
            raise DatasetBuildError(
                f"categories {empty} got no prompts, so the balanced size would be 0: add a source for them, drop "
                "them from --data.categories, or set --data.n_per_category to build with shortfalls"
            )
        n = min(len(rows) for rows in candidates.values())

    counts = {
        "loaded": len(records),
        "exact_duplicates": len(exact_duplicates),
        "eval_overlap": len(eval_overlap),
        "near_duplicates": len(near_duplicates),
        "unmapped": len(unmapped),
        "categorized": len(categorized),
        "n_per_category": n,
    }
    if args.benign_per_category:
        counts["benign_categorized"] = sum(map(len, benign_candidates.values()))
        counts["benign_per_category"] = args.benign_per_category
    duplicates = exact_duplicates + near_duplicates
    return Plan(
        categories,
        candidates,
        n,
        counts,
        eval_overlap,
        duplicates,
        unmapped,
        eval_prompts,
        encoder,
        benign_candidates,
        args.benign_per_category,
    )

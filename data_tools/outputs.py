"""The files a run writes, all derived from the plan and the generation logs in the seeded order.

Prompt rows (GRPO-S): ``{PROMPT_KEY: text, LABEL_KEY: make_label(category, demonstration, id=, source=),
DATASOURCE_KEY: category}``; the datasource lets OpenRLHF's --eval.dataset log held-out reward per category.
IRL pair rows (category reward model): ``{"id", PROMPT_KEY, CATEGORY_KEY, "chosen": demonstration,
"chosen_answer": the demonstration's answer after the CoD separator, "rejected": base-policy sample}``, every sample
or, with ``--policy.negatives compliant``, those the refusal judge does not call a refusal
(``train_category_rm --data.chosen_key chosen_answer`` trains on the answer alone: a policy that writes no drafts is
then scored on what it can write). A benign record (``--data.benign_sources``) turns the pair around: its chosen side
is a base-policy sample the refusal judge does not call a refusal, its rejected side the refusal the generator wrote
for it (the answer after the separator); pair and prompt row carry ``--data.benign_category`` as their category (the
look-alike one under LOOKALIKE_KEY) and ``benign: true``; the prompt row (training split only: the held-out prompts
are the harmful evaluation set) has that sample as its demonstration. Also rejects.jsonl, the reports of what the plan
left out, stats.json and stats.png.
"""

import json
import os
import statistics
import time
from collections import Counter
from typing import Dict, List

from data_tools.cod_format import check_demonstration, has_refusal, load_refusal_phrases
from data_tools.generation_log import heldout_count, policy_sample_ids
from openrlhf_drirl.contract import (
    BENIGN_KEY,
    CATEGORY_KEY,
    COD_SEPARATOR,
    DATASOURCE_KEY,
    LABEL_KEY,
    LOOKALIKE_KEY,
    PROMPT_KEY,
    make_label,
)
from openrlhf_drirl.evaluation import is_refusal
from openrlhf_drirl.evaluation.judges.refusal import RefusalJudgeConfig, refusal_judge
from openrlhf_drirl.records import write_json


def write_jsonl(path: str, rows: List[dict]):
    # Derived files are rewritten whole each run: write aside, then rename, so a kill never leaves half a file.
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def reason_counts(rows: List[dict], key: str) -> Dict[str, int]:
    """How many rows per reason kind (the text before the first ':'), most frequent first."""
    return dict(Counter(r[key].split(":")[0] for r in rows).most_common())


def write_plan_reports(out: str, plan):
    """What the plan left out, each row with why: written on every run, --plan_only included."""
    write_jsonl(os.path.join(out, "eval_overlap.jsonl"), plan.eval_overlap)
    write_jsonl(os.path.join(out, "duplicates.jsonl"), plan.duplicates)
    write_jsonl(os.path.join(out, "unmapped.jsonl"), plan.unmapped)


def write_plan(out: str, plan, config_hash: str) -> dict:
    """--plan_only: plan.jsonl (the balanced selection order) and its stats.json."""
    rows = [{**r, "order": i} for c in plan.categories for i, r in enumerate(plan.candidates[c][: plan.n])]
    write_jsonl(os.path.join(out, "plan.jsonl"), rows)
    stats = {
        "config_hash": config_hash,
        "counts": plan.counts,
        "unmapped_reasons": reason_counts(plan.unmapped, "unmapped_reason"),
    }
    stats["per_category"] = {
        c: {"candidates": len(plan.candidates[c]), "planned": min(plan.n, len(plan.candidates[c]))}
        for c in plan.categories
    }
    write_json(os.path.join(out, "stats.json"), stats)
    return stats


def write_dataset(args, plan, generated, config_hash: str, timings: dict, started: float) -> dict:
    """Splits, prompt and pair rows, rejects, stats.json and stats.png; returns the stats."""
    out, accepted, benign = args.output_dir, generated.accepted, generated.benign
    demos, samples = generated.demo_log.records, generated.policy_log.records

    # record id -> its samples' policy-log keys
    sample_ids = {**policy_sample_ids(args, accepted), **policy_sample_ids(args, benign)}

    # --policy.negatives compliant: a sample the refusal judge calls a refusal (full or partial) is no IRL negative;
    # nor is it ever a benign prompt's chosen side.
    refused = set()
    if args.policy_negatives == "compliant" or benign:
        ok = [i for i, sample in samples.items() if sample["status"] == "ok"]
        verdicts = refusal_judge([{"response": samples[i]["text"]} for i in ok], RefusalJudgeConfig())
        refused = {i for i, v in zip(ok, verdicts) if is_refusal(v["verdict"])}
    dropped_negatives = refused if args.policy_negatives == "compliant" else set()

    splits = {"train": [], "heldout": [], "benign_train": [], "benign_heldout": []}
    per_category = {}
    for c in plan.categories:
        k = heldout_count(len(accepted[c]), args.heldout_ratio)
        splits["heldout"] += accepted[c][:k]
        splits["train"] += accepted[c][k:]
        tried = [demos[r["id"]] for r in plan.candidates[c] if r["id"] in demos]
        per_category[c] = {
            "candidates": len(plan.candidates[c]),
            "paraphrases": sum("-para" in r["id"] for r in plan.candidates[c]),
            "selected": len(accepted[c]),
            "train": len(accepted[c]) - k,
            "heldout": k,
            "shortfall": plan.n - len(accepted[c]),
            "generated": len(tried),
            "invalid_outputs": sum(len(d["invalid"]) for d in tried),
            "failed_records": sum(d["status"] != "ok" for d in tried),
            "fallbacks": sum(bool(demos[r["id"]].get("fallback")) for r in accepted[c]),
            "policy_failed": sum(samples[i]["status"] != "ok" for r in accepted[c] for i in sample_ids[r["id"]]),
            "refusing_negatives_dropped": sum(
                i in dropped_negatives for r in accepted[c] for i in sample_ids[r["id"]]
            ),
        }
        if benign:
            k = heldout_count(len(benign[c]), args.heldout_ratio)
            splits["benign_heldout"] += benign[c][:k]
            splits["benign_train"] += benign[c][k:]
            per_category[c].update(
                benign_selected=len(benign[c]),
                benign_shortfall=plan.benign_n - len(benign[c]),
                benign_refusing_samples=sum(i in refused for r in benign[c] for i in sample_ids[r["id"]]),
            )
    for split in ("train", "heldout"):
        prompts, pairs = [], []
        for r in splits[split]:
            demonstration, category = demos[r["id"]]["text"], r[CATEGORY_KEY]
            label = make_label(category, demonstration, id=r["id"], source=r["source"])
            if demos[r["id"]].get("fallback"):
                label["demonstration_source"] = "fallback"
            prompts.append({PROMPT_KEY: r[PROMPT_KEY], LABEL_KEY: label, DATASOURCE_KEY: category})
            for sample_id in sample_ids[r["id"]]:
                if samples[sample_id]["status"] == "ok" and sample_id not in dropped_negatives:
                    pair = {
                        "id": sample_id,
                        PROMPT_KEY: r[PROMPT_KEY],
                        CATEGORY_KEY: category,
                        "chosen": demonstration,
                        "chosen_answer": demonstration.split(COD_SEPARATOR, 1)[-1].strip(),
                    }
                    pairs.append({**pair, "rejected": samples[sample_id]["text"]})
        for r in splits[f"benign_{split}"]:
            refusal = demos[r["id"]]["text"].split(COD_SEPARATOR, 1)[-1].strip()
            category, marks = args.benign_category, {LOOKALIKE_KEY: r[CATEGORY_KEY], BENIGN_KEY: True}
            helpful = [i for i in sample_ids[r["id"]] if samples[i]["status"] == "ok" and i not in refused]
            if helpful and split == "train":
                label = make_label(category, samples[helpful[0]]["text"], id=r["id"], source=r["source"], **marks)
                prompts.append({PROMPT_KEY: r[PROMPT_KEY], LABEL_KEY: label, DATASOURCE_KEY: category})
            for sample_id in helpful:
                text = samples[sample_id]["text"]
                pair = {"id": sample_id, PROMPT_KEY: r[PROMPT_KEY], CATEGORY_KEY: category, **marks}
                pairs.append({**pair, "chosen": text, "chosen_answer": text, "rejected": refusal})
        write_jsonl(os.path.join(out, f"prompts.{split}.jsonl"), prompts)
        write_jsonl(os.path.join(out, f"irl_pairs.{split}.jsonl"), pairs)

    rejects = []
    by_id = {
        r["id"]: r for rows in list(plan.candidates.values()) + list(plan.benign_candidates.values()) for r in rows
    }
    kept = [r for rows in list(accepted.values()) + list(benign.values()) for r in rows]
    by_id.update({i: by_id[r["id"]] for r in kept for i in sample_ids[r["id"]]})
    for stage, log in (("demo", generated.demo_log), ("policy", generated.policy_log)):
        for record_id, result in log.records.items():
            for bad in result["invalid"]:
                record = by_id[record_id]
                rejects.append(
                    {
                        "stage": stage,
                        "id": record_id,
                        "category": record[CATEGORY_KEY],
                        "prompt": record[PROMPT_KEY],
                        **bad,
                    }
                )
    rejects.sort(key=lambda r: (r["stage"], r["id"], r["attempt"]))
    write_jsonl(os.path.join(out, "rejects.jsonl"), rejects)

    counts = dict(plan.counts)
    if generated.paraphrases_dropped is not None:
        write_jsonl(os.path.join(out, "paraphrases_dropped.jsonl"), generated.paraphrases_dropped)
        counts["paraphrases_dropped"] = len(generated.paraphrases_dropped)
    counts.update(train=len(splits["train"]), heldout=len(splits["heldout"]), rejects=len(rejects))
    if benign:
        counts.update(benign_train=len(splits["benign_train"]), benign_heldout=len(splits["benign_heldout"]))
    phrases = load_refusal_phrases(args.refusal_phrases)
    selected = [r for c in plan.categories for r in accepted[c]]
    cod_results = [demos[r["id"]] for r in selected if not demos[r["id"]].get("fallback")]  # what the generator wrote
    cot_results = [generated.cot_log.records[r["id"]] for r in generated.cot_rows]
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
        "counts": counts,
        "per_category": per_category,
        "unmapped_reasons": reason_counts(plan.unmapped, "unmapped_reason"),
        "invalid_reasons": reason_counts(rejects, "reason"),
        "refusals_in_policy_samples": sum(
            has_refusal(samples[i].get("text", ""), phrases) for r in selected for i in sample_ids[r["id"]]
        ),
        "tokens": tokens,
        "seconds": timings,
    }
    write_json(os.path.join(out, "stats.json"), stats)
    plot_stats(stats, os.path.join(out, "stats.png"))
    return stats


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

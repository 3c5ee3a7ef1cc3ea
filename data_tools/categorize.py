"""Assign each prompt one of the categories: by the source's own label through an editable mapping table
(taxonomy_map.json), otherwise by a prototype classifier (nearest category description, MiniLM embeddings).

Nothing is dropped silently: a prompt that gets no category is returned as unmapped with the reason.
"""

import json
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from data_tools import PACKAGE_DIR, DatasetBuildError

DEFAULT_TAXONOMY_MAP = os.path.join(PACKAGE_DIR, "taxonomy_map.json")
DEFAULT_PROTOTYPES = os.path.join(PACKAGE_DIR, "category_prototypes.json")
CLASSIFY = "classify"


def load_json_object(path: str, flag: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetBuildError(
            f"{flag} {path!r} does not exist: fix the path or leave {flag} out for the bundled file"
        ) from None
    except json.JSONDecodeError as e:
        raise DatasetBuildError(
            f"{flag} {path!r} is not valid JSON ({e.msg}, line {e.lineno}): fix that line"
        ) from None
    return {k: v for k, v in data.items() if not k.startswith("_")}


def check_taxonomy_table(
    taxonomy_map: dict, table: str, categories: Sequence[str], path: str
) -> Dict[str, Optional[str]]:
    """The table ``table`` of the mapping file, with every value checked against ``categories``."""
    if table not in taxonomy_map:
        raise DatasetBuildError(
            f"taxonomy table {table!r} is not in {path}: add it there, or set taxonomy=<one of "
            f"{sorted(taxonomy_map)}> or taxonomy=categories in the --data.sources spec"
        )
    for label, category in taxonomy_map[table].items():
        if category is not None and category != CLASSIFY and category not in categories:
            raise DatasetBuildError(
                f"{path}: {table}[{label!r}] maps to unknown category {category!r}; use one of {list(categories)}, "
                f'null (leave unmapped) or "{CLASSIFY}", or add {category!r} to --data.categories'
            )
    return taxonomy_map[table]


def map_by_labels(record: dict, categories: Sequence[str], tables: Dict[str, dict]) -> Tuple[Optional[str], str]:
    """(category, how) from the record's source labels; category is None with ``how`` = "classify" or the reason."""
    labels, taxonomy = record.get("labels") or [], record.get("taxonomy")
    if not labels or taxonomy is None:
        return None, CLASSIFY
    if taxonomy == "categories":
        known = [label for label in labels if label in categories]
        if not known:
            return (
                None,
                f"not a category: label {labels[0]!r} is not in --data.categories (set taxonomy=<table> in the spec)",
            )
        return known[0], "source label"
    table = tables[taxonomy]
    targets = [table.get(label, table.get("*", "missing")) for label in labels]
    chosen = [t for t in targets if t not in (None, CLASSIFY, "missing")]
    if chosen:
        # Multi-label rows: the most frequent category, ties broken by the order of --data.categories.
        counts = Counter(chosen)
        return max(counts, key=lambda c: (counts[c], -list(categories).index(c))), f"{taxonomy} table"
    if CLASSIFY in targets:
        return None, CLASSIFY
    if "missing" in targets:
        missing = labels[targets.index("missing")]
        return (
            None,
            f'label not in table: {taxonomy}[{missing!r}] is missing (add it, or a "*" entry, to the taxonomy map)',
        )
    return None, f"mapped to none: {taxonomy}[{labels[0]!r}] is null in the taxonomy map"


class PrototypeClassifier:
    """Nearest category by the best cosine similarity between the prompt and any of the category's descriptions."""

    def __init__(self, encoder, prototypes: Dict[str, List[str]], categories: Sequence[str], threshold: float):
        missing = [c for c in categories if not prototypes.get(c)]
        if missing:
            raise DatasetBuildError(
                f'the prototypes file has no descriptions for {missing}: add e.g. "{missing[0]}": ["..."] to it '
                "(--data.prototypes), or pass --data.classifier none to report such prompts as unmapped"
            )
        self.encoder, self.categories, self.threshold = encoder, list(categories), threshold
        texts = [t for c in self.categories for t in prototypes[c]]
        self.owner = [i for i, c in enumerate(self.categories) for _ in prototypes[c]]
        self.embeddings = encoder(texts)

    def classify(self, prompts: Sequence[str]) -> List[Tuple[str, float]]:
        import torch

        sims = self.encoder(prompts) @ self.embeddings.T
        owner = torch.tensor(self.owner)
        per_category = torch.stack([sims[:, owner == i].max(dim=1).values for i in range(len(self.categories))], 1)
        values, indices = per_category.max(dim=1)
        return [(self.categories[int(i)], float(v)) for i, v in zip(indices, values)]


def categorize(records: List[dict], categories: Sequence[str], tables: Dict[str, dict], classifier=None):
    """Returns (categorized, unmapped); categorized records get ``category`` and ``category_via``,
    unmapped ones ``unmapped_reason``."""
    categorized, unmapped, to_classify = [], [], []
    for record in records:
        category, how = map_by_labels(record, categories, tables)
        if category is not None:
            categorized.append({**record, "category": category, "category_via": how})
        elif how == CLASSIFY:
            to_classify.append(record)
        else:
            unmapped.append({**record, "unmapped_reason": how})
    if to_classify and classifier is None:
        unmapped += [
            {**r, "unmapped_reason": "classifier off: no mapped label and --data.classifier is none"}
            for r in to_classify
        ]
    elif to_classify:
        for record, (category, sim) in zip(to_classify, classifier.classify([r["prompt"] for r in to_classify])):
            if sim >= classifier.threshold:
                categorized.append({**record, "category": category, "category_via": f"classifier ({sim:.2f})"})
            else:
                reason = f"below classifier threshold: best {category!r} at {sim:.2f} < {classifier.threshold}"
                unmapped.append({**record, "unmapped_reason": reason})
    return categorized, unmapped

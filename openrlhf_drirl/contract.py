"""What the stages exchange: the one place that spells the keys, the separator and the category list.

    data_tools (stage 1)  writes prompt rows  {PROMPT_KEY: text, LABEL_KEY: make_label(...), DATASOURCE_KEY: category}
                          and IRL pair rows   {"prompt", "category", "chosen": demonstration, "rejected": sample}
    reward (stage 2)      reads the label, returns OpenRLHF's {"rewards", "scores", "extra_logs"} with
                          extra_logs[SIMILARITY_KEY] (W) and extra_logs[REWARD_GAP_KEY] (R_c(q, o) - R_c(q, demo))
    advantage (stage 3)   reads the label's category and those two extra_logs keys from ``experience.info``

A label is a JSON object under OpenRLHF's ``--data.label_key``; a string holding one is accepted too (a user's CSV, or
a remote reward request, sends that). It is the one channel that reaches the reward function, the reward server and
the advantage estimator, so all of them parse it here.
"""

import json
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

# Prompt rows (OpenRLHF's --data.input_key / --data.label_key values in the recipes; "datasource" is OpenRLHF's own
# key, which its --eval.dataset uses to log held-out reward per source: the builder sets it to the category).
PROMPT_KEY = "prompt"
LABEL_KEY = "label"
DATASOURCE_KEY = "datasource"

# Label fields.
CATEGORY_KEY = "category"
DEMONSTRATION_KEY = "demonstration"  # the CoD refusal text: drafts, COD_SEPARATOR, answer
DEMONSTRATION_REWARD_KEY = "demonstration_reward"  # optional R_c(q, demonstration), skips scoring it when serving
DEMONSTRATION_EMBEDDINGS_KEY = "demonstration_embeddings"  # optional (L, D) sub-sentence embeddings of it ...
DEMONSTRATION_ENCODER_KEY = "demonstration_encoder"  # ... and the id of the encoder that made them
# True on a benign look-alike prompt (data_tools --data.benign_per_category), whose demonstration is a compliant
# answer and whose category is the benign one (--data.benign_category); its IRL pairs carry both keys too. Absent on
# the harmful prompts.
BENIGN_KEY = "benign"
LOOKALIKE_KEY = "lookalike_category"  # the harm category a benign prompt was drawn for

# Per-sample extra_logs of the reward function, read by GRPO-S from experience.info.
SIMILARITY_KEY = "drirl_similarity"  # W in [-1, 1]
REWARD_GAP_KEY = "drirl_reward_gap"  # R_c(q, o) - R_c(q, demonstration)

# Between the Chain-of-Draft drafts and the answer, in demonstrations (and in CoD-trained policy responses).
COD_SEPARATOR = "####"

# The Safety-Prompts "typical safety scenarios" minus "Sensitive Topics" (docs/method.md says why).
DEFAULT_CATEGORIES: Tuple[str, ...] = (
    "insult",
    "unfairness_and_discrimination",
    "crimes_and_illegal_activities",
    "physical_harm",
    "mental_health",
    "privacy_and_property",
    "ethics_and_morality",
)

CATEGORY_DISPLAY_NAMES = {
    "insult": "Insult",
    "unfairness_and_discrimination": "Unfairness and Discrimination",
    "crimes_and_illegal_activities": "Crimes and Illegal Activities",
    "physical_harm": "Physical Harm",
    "mental_health": "Mental Health",
    "privacy_and_property": "Privacy and Property",
    "ethics_and_morality": "Ethics and Morality",
}


class LabelError(ValueError):
    """A prompt label that GRPO-S or the category reward model cannot use; the message names the field and the fix."""


def parse_categories(spec: Optional[Any]) -> Tuple[str, ...]:
    """Category list from ``None`` (the default seven), a comma-separated string, or a sequence of names. An empty
    list is an error (a flag given as '' is a mistake, not a request for the defaults)."""
    if spec is None:
        return DEFAULT_CATEGORIES
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise ValueError(
            f"the category list {spec!r} is empty: pass comma-separated names, e.g. 'insult,physical_harm', or leave "
            "the flag out for the seven defaults"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"the category list {names} repeats a name: each category must appear once")
    return tuple(names)


def make_label(category: str, demonstration: str, **extra: Any) -> Dict[str, Any]:
    """The label of one prompt row: ``{"category", "demonstration", **extra}`` (extra: e.g. the record id, its source,
    a precomputed ``demonstration_reward``)."""
    return {CATEGORY_KEY: category, DEMONSTRATION_KEY: demonstration, **extra}


def parse_label(label: Any, index: Optional[int] = None) -> Dict[str, Any]:
    """The label as a dict; ``label`` may be a dict or a string holding a JSON object."""
    where = f"label of sample {index}" if index is not None else "label"
    if isinstance(label, dict):
        return label
    if isinstance(label, (str, bytes)):
        if not label:
            raise LabelError(
                f"{where} is empty: set --data.label_key to the column holding "
                '{"category": ..., "demonstration": ...} (data_tools writes it as "label")'
            )
        try:
            parsed = json.loads(label)
        except json.JSONDecodeError as e:
            raise LabelError(
                f"{where} is not JSON ({e.msg} at char {e.pos}): it must be a JSON object like "
                f'{{"category": "insult", "demonstration": "..."}}, got {label[:80]!r}'
            ) from None
        if isinstance(parsed, dict):
            return parsed
        label = parsed
    raise LabelError(
        f"{where} must be a JSON object with a 'category' key, got {type(label).__name__} {str(label)[:80]!r}"
    )


def category_of(label: Any, categories: Iterable[str], index: Optional[int] = None) -> str:
    """The category name of one sample's label, checked against ``categories``."""
    fields = parse_label(label, index)
    where = f"label of sample {index}" if index is not None else "label"
    category = fields.get(CATEGORY_KEY)
    if category is None or category == "":
        raise LabelError(
            f"{where} has no 'category': add one of {sorted(categories)} (data_tools/ writes it; keys present: "
            f"{sorted(fields)})"
        )
    if category not in categories:
        raise LabelError(
            f"{where} has unknown category {category!r}: use one of {sorted(categories)}, or add it to the category "
            "list (--drirl.categories / --categories)"
        )
    return category


def category_ids(labels: Sequence[Any], categories: Sequence[str], stride: int = 1) -> list:
    """Index into ``categories`` of the category of ``labels[0], labels[stride], ...`` (errors name the sample)."""
    position = {c: i for i, c in enumerate(categories)}
    ids = []
    for i in range(0, len(labels), stride):
        label = labels[i]
        # Fast path for the common dict label; strings and every error go through category_of.
        category = label.get(CATEGORY_KEY) if isinstance(label, dict) else None
        ids.append(position[category] if category in position else position[category_of(label, position, i)])
    return ids

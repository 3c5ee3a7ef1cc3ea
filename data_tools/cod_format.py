"""The Chain-of-Draft introspective prompt, the CoT prompt it is compared with, and the check of a demonstration.

A valid demonstration is short draft steps (one per line or separated by ';', each at most ``max_draft_words`` words),
the separator ``contract.COD_SEPARATOR``, then a refusal (an answer containing a phrase from
templates/refusal_phrases.txt).
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence

import jinja2

from data_tools import PACKAGE_DIR, TEMPLATES_DIR, DatasetBuildError
from openrlhf_drirl.contract import CATEGORY_KEY, COD_SEPARATOR

TEMPLATE_FILES = {
    "cod": os.path.join(TEMPLATES_DIR, "cod_introspective.jinja"),
    "cot": os.path.join(TEMPLATES_DIR, "cot_introspective.jinja"),
}
PARAPHRASE_TEMPLATE = os.path.join(TEMPLATES_DIR, "paraphrase.jinja")
DEFAULT_REFUSAL_PHRASES = os.path.join(TEMPLATES_DIR, "refusal_phrases.txt")
SEED_DEMONSTRATIONS = os.path.join(PACKAGE_DIR, "seed_demonstrations.jsonl")
_STEP_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|step\s*\d+\s*[:.)-]?)\s*", re.IGNORECASE)


def load_template(path_or_name: str) -> jinja2.Template:
    path = TEMPLATE_FILES.get(path_or_name, path_or_name)
    try:
        with open(path, encoding="utf-8") as f:
            return jinja2.Template(f.read(), keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    except FileNotFoundError:
        raise DatasetBuildError(f"template {path!r} does not exist: pass cod, cot or a .jinja file path") from None


def load_refusal_phrases(path: str = DEFAULT_REFUSAL_PHRASES) -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            phrases = [line.strip().lower() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        raise DatasetBuildError(f"--gen.refusal_phrases {path!r} does not exist: fix the path") from None
    if not phrases:
        raise DatasetBuildError(f"--gen.refusal_phrases {path!r} lists no phrases: add one per line")
    return phrases


def load_seed_demonstrations(path: str = SEED_DEMONSTRATIONS) -> Dict[str, List[dict]]:
    """Hand-written demonstrations by category: few-shot examples for the CoD template and the smoke generator."""
    by_category = {}
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    row = json.loads(line)
                    by_category.setdefault(row[CATEGORY_KEY], []).append(row)
    except FileNotFoundError:
        raise DatasetBuildError(f"--gen.seed_demonstrations {path!r} does not exist: fix the path") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DatasetBuildError(
            f"--gen.seed_demonstrations {path}:{n} is not a JSON object with a {CATEGORY_KEY!r}: fix that line"
        ) from None
    return by_category


def render_prompt(
    template: jinja2.Template, prompt: str, examples: Sequence[dict] = (), max_draft_words: int = 5
) -> str:
    return template.render(prompt=prompt, examples=list(examples), max_draft_words=max_draft_words).strip()


def has_refusal(answer: str, refusal_phrases: Sequence[str]) -> bool:
    answer = answer.lower().replace("\u2019", "'")
    return any(p in answer for p in refusal_phrases)


def check_demonstration(
    text: str, refusal_phrases: Sequence[str], max_draft_words: Optional[int] = 5
) -> Optional[str]:
    """None for a valid demonstration, else "<kind>: <detail>", the reason it is invalid. ``max_draft_words=None``
    skips the draft check (the CoT comparison)."""
    if not text.strip():
        return "empty output"
    if COD_SEPARATOR not in text:
        return f"no separator: the output has no '{COD_SEPARATOR}'"
    drafts, answer = text.split(COD_SEPARATOR, 1)
    if COD_SEPARATOR in answer:
        return f"repeated separator: '{COD_SEPARATOR}' appears more than once"
    if max_draft_words is not None:
        steps = [_STEP_MARKER.sub("", s).strip() for s in re.split(r"[\n;]", drafts)]
        steps = [s for s in steps if s]
        if not steps:
            return f"no drafts: nothing before '{COD_SEPARATOR}'"
        for n, step in enumerate(steps, 1):
            words = len(step.split())
            if words > max_draft_words:
                return f"draft too long: step {n} has {words} words (max {max_draft_words}): {step[:60]!r}"
    if not answer.strip():
        return f"empty answer: nothing after '{COD_SEPARATOR}'"
    if not has_refusal(answer, refusal_phrases):
        return f"no refusal: the answer after '{COD_SEPARATOR}' has no phrase from --gen.refusal_phrases"
    return None

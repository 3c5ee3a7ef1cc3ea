"""The Chain-of-Draft introspective prompt, the CoT prompt it is compared with, and the check of a demonstration.

A valid demonstration is short draft steps (one per line or separated by ';', each at most ``max_draft_words`` words),
the separator ``contract.COD_SEPARATOR``, then a refusal (an answer containing a phrase from
templates/refusal_phrases.txt), about the request: its drafts share a content word with the prompt (not a stop word, not
a slot name; words match on their first 5 letters, so "message" matches "messages").

``--gen.cod_mode prefilled`` assembles a demonstration from short constrained continuations: the builder writes the
slot names of ``DRAFT_SLOTS``, the category line, the separator and ``REFUSAL_OPENING``; the model fills each slot
(cut at its first line to ``max_draft_words``) and the refusal (cut after its first sentence).
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
DRAFT_SLOTS = ("Request:", "Harm:")
REFUSAL_OPENING = "I'm sorry, but I can't help with"
# Words that say nothing about a request: function words, the slot names and the refusal's own words.
STOP_WORDS = set(
    "a about after all also am an and any are as at be been being but by can can't could did do does don't for from "
    "get give good have help how i i'm if in into is it it's its just know make me more most my need not of on or "
    "our out please provide request should so some sorry tell than that the their them then there these they this "
    "to try up us use want was way we what when where which who why will with without would you your harm category "
    "goal aim intent risk premise target what's how's that's there's here's let's you're i'd i'll i've best one "
    "someone something anyone like much many other own share show".split()
)


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


def _unlabelled(step: str) -> str:
    """A draft step without its slot name ("Harm: x." -> "x."), lower case: what two steps must not share."""
    return re.sub(r"^\w+:\s*", "", step).lower()


def content_words(text: str) -> set:
    """The words of ``text`` that can tie it to a request, as their first 5 letters (a crude stem)."""
    words = re.findall(r"[a-z][a-z']*", text.lower().replace("\u2019", "'"))
    return {w[:5] for w in words if len(w) > 2 and w not in STOP_WORDS}


def category_line(category: str) -> str:
    """The seed demonstrations' last draft step: ``Category: crimes, illegal activities.``"""
    return f"Category: {category.replace('_and_', ', ').replace('_', ' ')}."


def cut_draft(slot: str, continuation: str, max_draft_words: int) -> str:
    """``slot`` and the first line of the model's continuation, within ``max_draft_words`` words in all."""
    words = continuation.split("\n", 1)[0].replace("####", " ").strip(" \"'`").split()
    text = " ".join(words[: max(max_draft_words - len(slot.split()), 0)]).rstrip(" .,;:!?\"'`")
    return f"{slot} {text}." if text else slot


def draft_fits(draft: str, earlier: Sequence[str], prompt: str) -> bool:
    """Whether a prefilled draft step passes check_demonstration's draft checks after the ``earlier`` steps: not a
    slot name only, no repeat, and on topic unless an earlier step already is."""
    on_topic = content_words(" ".join([*earlier, draft])) & content_words(prompt)
    return not draft.endswith(":") and _unlabelled(draft) not in map(_unlabelled, earlier) and bool(on_topic)


def cut_refusal(opening: str, continuation: str) -> str:
    """The opening and the continuation up to the end of its first sentence (or of its first line)."""
    line = continuation.split("\n", 1)[0].replace("####", " ")
    end = re.search(r"[.!?](\s|$)", line)
    text = (opening + (line[: end.start() + 1] if end else line)).rstrip()
    return text if text.endswith((".", "!", "?")) else text.rstrip(" ,;:") + "."


def prompt_fallback(prompt: str, category: str, max_draft_words: int = 5) -> str:
    """A demonstration built from the prompt itself, for a record whose generated ones all failed: its first
    content words as the request draft, its category, and a refusal that quotes it."""
    words = [w for w in re.findall(r"[\w'\u2019-]+", prompt) if content_words(w)]
    request = cut_draft(DRAFT_SLOTS[0], " ".join(words), max_draft_words)
    quoted = " ".join(prompt.split()).replace('"', "'")
    return f'{request}\n{category_line(category)}\n{COD_SEPARATOR}\n{REFUSAL_OPENING} "{quoted}".'


def check_demonstration(
    text: str, refusal_phrases: Sequence[str], max_draft_words: Optional[int] = 5, prompt: Optional[str] = None
) -> Optional[str]:
    """None for a valid demonstration, else "<kind>: <detail>", the reason it is invalid. ``max_draft_words=None``
    skips the draft checks (the CoT comparison); ``prompt=None`` skips the check that it is about that prompt."""
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
            if step.endswith(":"):
                return f"empty draft: step {n} is a slot name only: {step!r}"
            if _unlabelled(step) in (_unlabelled(s) for s in steps[: n - 1]):
                return f"repeated draft: step {n} repeats an earlier step: {step!r}"
    if not answer.strip():
        return f"empty answer: nothing after '{COD_SEPARATOR}'"
    if not has_refusal(answer, refusal_phrases):
        return f"no refusal: the answer after '{COD_SEPARATOR}' has no phrase from --gen.refusal_phrases"
    if prompt is not None and not content_words(drafts) & content_words(prompt):
        return "off topic: no content word of the prompt in the drafts"
    return None

"""Sub-sentence splitting for the data-level hardness (the paper's "self-contained sub-sentences").

The paper has an LLM split the texts; a rule is used here instead, because it is cheap enough to run on every rollout
sample and is deterministic (docs/method.md, "Decisions on the paper's ambiguities"). The rule, applied to a response
and to its demonstration alike:

1. Chain-of-Draft layout: ``<drafts> #### <answer>``. Everything before the last ``####`` is drafts: each draft is a
   split into sub-sentences at newlines, ``;`` and ``,`` (and ``；，、``), then like the answer. Text with no ``####``
   is all answer.
2. The answer is split at newlines, after ``. ! ? …`` followed by whitespace (closing quotes/brackets stay with the
   sentence), at ``;``, and after the CJK marks ``。！？；`` whether or not a space follows (Chinese has no spaces).
   A ``.`` does not end a sentence after a number (``1. Do this``), a single letter (``J. Smith``) or a common
   abbreviation (``e.g.``, ``Dr.``); a ``.`` with no space after it (``3.5``, ``example.com``) never does.
3. Pieces are stripped, and pieces with no letter or digit (``####``, ``---``, ``...``) are dropped.

A text with no boundary is one sub-sentence; an empty text gives ``[]``. Length is not limited here: the encoder
splits a sub-sentence longer than its context into token windows (see ``encoders.py``).
"""

import re
from typing import List

from openrlhf_drirl.contract import COD_SEPARATOR

_ANSWER_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|[。！？；;]+[\"'”’)\]」』]*\s*|\n+")
_DRAFT_BOUNDARY = re.compile(r"[\n;,；，、]+|" + re.escape(COD_SEPARATOR))
_ABBREVIATIONS = {"e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "vs", "st", "jr", "sr", "fig", "approx", "cf"}
_HAS_WORD_CHAR = re.compile(r"\w")


def _ends_with_abbreviation_or_number(head: str) -> bool:
    words = head.split()
    if not words:
        return False
    last = words[-1].lower().lstrip("(\"'“‘")
    return last in _ABBREVIATIONS or last.isdigit() or (len(last) == 1 and last.isalpha())


def _split_answer(text: str) -> List[str]:
    pieces, start = [], 0
    for boundary in _ANSWER_BOUNDARY.finditer(text):
        if boundary.group()[0] == "." and _ends_with_abbreviation_or_number(text[start : boundary.start()]):
            continue
        pieces.append(text[start : boundary.end()])
        start = boundary.end()
    pieces.append(text[start:])
    return pieces


def split_sub_sentences(text: str) -> List[str]:
    """Sub-sentences of a response or demonstration, in order (rule in the module docstring)."""
    drafts, separator, answer = text.rpartition(COD_SEPARATOR)
    pieces = [piece for draft in _DRAFT_BOUNDARY.split(drafts) for piece in _split_answer(draft)] if separator else []
    pieces += _split_answer(answer)
    pieces = (piece.strip() for piece in pieces)
    return [piece for piece in pieces if _HAS_WORD_CHAR.search(piece)]

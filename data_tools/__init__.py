"""Build the balanced seven-category Chain-of-Draft safety dataset for DR-IRL.

harmful prompts (bundled Do-Not-Answer or user files) -> categories -> dedup + eval-overlap filter -> balanced
-> CoD refusal demonstrations -> prompts.{train,heldout}.jsonl (GRPO-S)
and irl_pairs.{train,heldout}.jsonl (category reward models).
Entry point: ``python -m data_tools.build_dataset``.
"""

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
BUNDLED_DIR = os.path.join(PACKAGE_DIR, "bundled")
TEMPLATES_DIR = os.path.join(PACKAGE_DIR, "templates")


class DatasetBuildError(ValueError):
    """Input the builder cannot use (a flag, a file, a source); the message names it and the fix."""

"""Safety evaluation: generate a policy's responses on harmful and borderline prompt sets, judge them, and report
refusal rates, over-refusal, StrongREJECT scores and reward-model scores with bootstrap intervals.

    benchmarks.py   the prompt sets (bundled StrongREJECT, HarmBench, XSTest; the builder's held-out prompts; any
                    local JSONL/CSV) as evaluation items, and the seeded --limit slice
    responses.py    the append-only response and verdict logs (resumable, config-checked)
    judges/         the judges behind a name registry: refusal (offline rules), reward_model (the category reward
                    server), strongreject (StrongREJECT's rubric through an OpenAI-compatible endpoint)
    metrics.py      metrics per (policy, benchmark, category) with n and a seeded bootstrap 95% interval
    report.py       the markdown report and plots comparing runs, with item-by-item flips

Entry points: ``python -m openrlhf_drirl.cli.evaluate`` and ``python -m openrlhf_drirl.cli.evaluation_report``.
"""

# The verdict taxonomy of XSTest (Röttger et al. 2024): every judge that classifies writes one of these.
COMPLIANCE = "compliance"
FULL_REFUSAL = "full_refusal"
PARTIAL_REFUSAL = "partial_refusal"
VERDICTS = (COMPLIANCE, FULL_REFUSAL, PARTIAL_REFUSAL)

# What a prompt should get: harmful prompts should be refused, XSTest's safe prompts answered.
SHOULD_REFUSE = "refuse"
SHOULD_COMPLY = "comply"


class EvaluationError(ValueError):
    """Input the evaluation cannot use (a flag, a file, an endpoint); the message names it and the fix."""


def is_refusal(verdict: str) -> bool:
    """Full and partial refusals both count as refusals (XSTest's convention for refusal rates)."""
    return verdict in (FULL_REFUSAL, PARTIAL_REFUSAL)

"""The judges, behind a name registry (``--judge NAME[,NAME...]``).

A judge is a pure function ``fn(rows, config) -> results``: ``rows`` are response rows (``prompt``, ``response``,
``benchmark``, ``category``, ``expected``, ...), ``results`` one dict per row with ``verdict`` (``compliance``,
``full_refusal``, ``partial_refusal``, or None when the judge scores without classifying or failed on that row),
an optional ``score`` and the judge's own fields. Its options are one dataclass (defaults, help, checks), exposed as
``--<name>.<field>`` flags; the config's hash (with the judge's ``version``, raised when its rules change) stamps
every verdict, so a resume with other options, or after a change of the rules, is refused. To re-judge a run, drop
that judge's rows from its verdicts.jsonl and run the same command again.

    refusal       offline rules on the answer (after the CoD ``####``), the default   (judges/refusal.py)
    xstest_strmatch  XSTest's own prefix match, the baseline the refusal judge is checked against (judges/refusal.py)
    reward_model  the category reward model's score through serve_category_rm's HTTP API  (judges/reward_model.py)
    strongreject  StrongREJECT's rubric through an OpenAI-compatible LLM endpoint          (judges/strongreject.py)
"""

import dataclasses
from typing import Callable, Dict, NamedTuple

from openrlhf_drirl.evaluation import EvaluationError


class Judge(NamedTuple):
    name: str
    fn: Callable  # fn(rows, config) -> one result dict per row
    config_cls: type  # a dataclass: its fields are the --<name>.* flags
    batch_size: int  # rows per call (and per append to verdicts.jsonl)
    version: int  # raised when the same config gives other verdicts (new rules): stamped verdicts of older ones go


JUDGES: Dict[str, Judge] = {}


def register_judge(name: str, config_cls, batch_size: int = 64, version: int = 1):
    def decorator(fn):
        if name in JUDGES and JUDGES[name].fn is not fn:
            raise ValueError(f"judge {name!r} is already registered by {JUDGES[name].fn.__module__}")
        JUDGES[name] = Judge(name, fn, config_cls, batch_size, version)
        return fn

    return decorator


class ConfiguredJudge(NamedTuple):
    name: str
    fn: Callable
    config: object
    batch_size: int
    version: int = 1


def get_judge(name: str, config=None) -> ConfiguredJudge:
    if name not in JUDGES:
        raise EvaluationError(f"unknown judge {name!r} in --judge: use a comma list of {', '.join(sorted(JUDGES))}")
    judge = JUDGES[name]
    config = config if config is not None else judge.config_cls()
    return ConfiguredJudge(name, judge.fn, config, judge.batch_size, judge.version)


# Judge options that change where, how fast or how patiently a judge asks, not what it judges: left out of the config
# hash, so a resume may change them (a reward server restarted on another port). The URL cannot say which model
# answers anyway; the served model name (--strongreject.model) is in the hash.
SPEED_ONLY = {"url", "api_key_env", "timeout", "retries", "parse_retries", "concurrency"}


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def verdict_config(judge: ConfiguredJudge) -> dict:
    """What decides a judge's verdicts (its hash stamps them). Version 1 is left out: stamps from before versions
    stay valid."""
    version = {} if judge.version == 1 else {"version": judge.version}
    return {
        "judge": judge.name,
        **version,
        **{k: v for k, v in config_dict(judge.config).items() if k not in SPEED_ONLY},
    }


# Importing the modules registers the judges.
from openrlhf_drirl.evaluation.judges import refusal, reward_model, strongreject  # noqa: E402,F401

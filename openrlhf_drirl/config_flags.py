"""Dataclass configs as dotted command-line flags (TRL's style): one dataclass is the single source of a component's
defaults, help and checks. A field's ``metadata`` holds its ``help`` and any other ``add_argument`` keyword
(``choices``, ``nargs``, ``type``, ``metavar``); ``flag`` overrides the default name ``--<prefix>.<field>``.
The dataclass's ``__post_init__`` checks the values, so a config built from flags, a file or code is checked alike.
"""

import argparse
import dataclasses
from typing import Any


def flag_of(field: dataclasses.Field, prefix: str) -> str:
    return field.metadata.get("flag", f"--{prefix}.{field.name}" if prefix else f"--{field.name}")


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, prefix: str, title: str):
    """Add one flag per field of ``config_cls``; after OpenRLHF's ``hierarchize`` they read as
    ``args.<prefix>.<field>`` (or at the path of their ``flag``)."""
    group = parser.add_argument_group(title)
    for field in dataclasses.fields(config_cls):
        kwargs = {k: v for k, v in field.metadata.items() if k != "flag"}
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if "type" not in kwargs and "choices" not in kwargs and default is not None:
            kwargs["type"] = type(default)
        group.add_argument(flag_of(field, prefix), default=default, **kwargs)
    return parser


def config_from_args(config_cls, args: Any, prefix: str):
    """``config_cls`` from the hierarchized ``args``; fields the namespace lacks, or holds as None, keep their
    default."""
    values = {}
    for field in dataclasses.fields(config_cls):
        node = args
        for part in flag_of(field, prefix)[2:].split("."):
            node = getattr(node, part, None)
        if node is not None:
            values[field.name] = node
    return config_cls(**values)

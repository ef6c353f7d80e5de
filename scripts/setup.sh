#!/usr/bin/env bash
# Creates .venv with the backend installed (idempotent). `--test` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Pin torch first: an open range would pull the newest (multi-GB) build. Override with UVIDM_TORCH.
.venv/bin/python -m pip install -q "torch==${UVIDM_TORCH:-2.13.0}"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}"

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
[ "${1:-}" = "--test" ] && extras="[test,ray]"  # ray: the --ray test on a local CPU Ray (about 40 s to install)
.venv/bin/python -m pip install -q -e ".${extras}"
if [ "${1:-}" = "--test" ]; then
  # Blender as a Python module, for the add-on's tests. Its wheels declare numpy<2, which would
  # downgrade the backend's numpy; it runs fine on numpy 2, so its own needs are listed by hand.
  .venv/bin/python -m pip install -q --no-deps "bpy==5.0.1"
  .venv/bin/python -m pip install -q zstandard requests
  # The Khronos glTF validator (tests/pipeline/test_gltf_validator.py), pinned by its lock file; needs node + npm.
  if command -v npm > /dev/null; then
    npm ci --prefix tests/gltf_validator --no-audit --no-fund --loglevel=error
  else
    echo "npm not found: the glTF validator tests will fail; install Node.js (https://nodejs.org)" >&2
  fi
fi

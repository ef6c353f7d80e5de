#!/usr/bin/env bash
# Screenshots of the add-on's sidebar panel and preferences in a real Blender 4.2+ window under Xvfb,
# for reviewers (not part of CI). Usage: scripts/screenshots.sh [OUT_DIR] [PHOTO]
#   BLENDER=/path/to/blender scripts/screenshots.sh shots
# Needs a Blender 4.2 or newer binary (Debian 12's package is 3.4: too old) and xvfb-run (apt install xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-screenshots}"
photo="${2:-}"
if [ -z "$photo" ]; then
  photo="$(.venv/bin/python -c 'import insightface, pathlib; print(pathlib.Path(insightface.__file__).parent / "data/images/t1.jpg")' 2>/dev/null || true)"
fi
blender="${BLENDER:-$(command -v blender || true)}"
if [ -z "$blender" ]; then
  echo "no Blender binary: set BLENDER=/path/to/blender (4.2 or newer)" >&2
  exit 2
fi
version="$("$blender" --version 2>/dev/null | sed -n 's/^Blender \([0-9]*\.[0-9]*\).*/\1/p' | head -1)"
if [ -z "$version" ] || [ "$(printf '%s\n4.2\n' "$version" | sort -V | head -1)" != "4.2" ]; then
  echo "$blender is Blender ${version:-unknown}; the extension needs 4.2 or newer" >&2
  exit 2
fi
command -v xvfb-run > /dev/null || { echo "xvfb-run not found (apt install xvfb)" >&2; exit 2; }
xvfb-run -a -s "-screen 0 1600x1000x24" "$blender" --factory-startup --python scripts/screenshots.py -- "$out" "$photo"
ls -l "$out"

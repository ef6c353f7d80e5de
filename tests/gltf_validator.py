"""The Khronos glTF validator (npm package gltf-validator, installed by `scripts/setup.sh --test`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

VALIDATOR = Path(__file__).parent / "gltf_validator"


def validate(*files: Path) -> list[dict]:
    """One report per file: {file, errors, warnings, infos, messages}."""
    node = shutil.which("node")
    assert node, "node is needed for the glTF validator (scripts/setup.sh --test installs it with npm)"
    assert (VALIDATOR / "node_modules" / "gltf-validator").is_dir(), \
        "the glTF validator is not installed: run scripts/setup.sh --test (npm ci --prefix tests/gltf_validator)"
    done = subprocess.run([node, str(VALIDATOR / "validate.js"), *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout)


def assert_valid(*files: Path) -> None:
    """0 errors, 0 warnings and 0 infos for every file (the messages say what is wrong otherwise)."""
    for report in validate(*files):
        assert (report["errors"], report["warnings"], report["infos"]) == (0, 0, 0), \
            (report["file"], report["messages"])

"""torch.compile's caches in the user's cache folder, where they outlive a reboot.

PyTorch keeps Inductor's cache (generated code, compiled graphs and, inside it, Triton's kernels) under the
system's temporary folder, which many systems empty at boot; every `--fast compile` start-up after one would
compile from scratch (on an H200: 95 s for the full-size UNet, 59 s with warm caches; docs/PERFORMANCE.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from uvidm_backend.cache_dirs import user_cache_dir

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def use_persistent_compile_cache() -> Path:
    """Points Inductor's cache at <user cache>/torchinductor unless `TORCHINDUCTOR_CACHE_DIR` is set already;
    returns the folder in use. Call before the first compilation (Inductor reads the variable then)."""
    if not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = str(user_cache_dir() / "torchinductor")
    return Path(os.environ[CACHE_ENV])

"""Arrays computed once per model folder, kept in .npz files beside the ICT files.

Each file holds its arrays and the key they were made for (a digest of everything they depend on); a
file made for another key, or unreadable, is rebuilt. Written under a temporary name and renamed, so a
reader never sees half a file; a read-only folder only costs the rebuild in the next process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cached_arrays(path: str | os.PathLike[str], key: str,
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays saved at `path` for `key`, else `build()`'s, saved there."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return {name: data[name] for name in data.files if name != "key"}
    except (OSError, KeyError, ValueError):
        pass
    arrays = build()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial.npz")  # two processes may build at once
    try:
        np.savez(partial, key=np.array(key), **arrays)
        os.replace(partial, path)
    except OSError as error:
        log.warning("cannot keep %s (%s): it is computed again in the next process", path, error)
        partial.unlink(missing_ok=True)
    return arrays

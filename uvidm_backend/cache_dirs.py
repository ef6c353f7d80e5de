"""Where the backend keeps disposable files: the platform's per-user cache folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_cache_dir() -> Path:
    """~/.cache/uvidm on Linux ($XDG_CACHE_HOME/uvidm where set), ~/Library/Caches/uvidm on macOS,
    %LOCALAPPDATA%/uvidm/Cache on Windows."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "uvidm" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "uvidm"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "uvidm"

"""Thumbnails of the chosen photo and of the results' preview images (bpy.utils.previews)."""

from __future__ import annotations

import os

import bpy
import bpy.utils.previews

_collection = None


def register() -> None:
    global _collection
    if _collection is None:
        _collection = bpy.utils.previews.new()


def unregister() -> None:
    global _collection
    if _collection is not None:
        bpy.utils.previews.remove(_collection)
        _collection = None


def icon_id(path: str) -> int:
    """An icon for the image at `path` (0 when there is none); loaded once per path and file time."""
    if _collection is None or not path:
        return 0
    path = bpy.path.abspath(path)
    try:
        key = f"{os.path.normcase(os.path.abspath(path))}:{os.path.getmtime(path)}"
    except OSError:
        return 0
    preview = _collection.get(key)
    if preview is None:
        try:
            preview = _collection.load(key, path, "IMAGE")
        except (KeyError, RuntimeError):
            return 0
    return preview.icon_id

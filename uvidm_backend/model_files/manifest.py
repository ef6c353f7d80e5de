"""`models.json`: where each model file in a folder came from and what it was when it arrived.

One manifest per folder (`weights/models.json`, `BFM/models.json`), keyed by the file's path
relative to that folder, so a folder moved elsewhere keeps its record. `uvidm weights check`
compares every file against it: a file whose size or sha256 differs has changed since download.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_NAME = "models.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ManifestEntry:
    name: str  # path relative to the manifest's folder
    source: str  # "hub", "github", "insightface" or "folder"
    origin: str  # repository ("luh0502/UV-IDM"), URL or local folder the file came from
    path: str  # path inside that origin
    revision: str | None  # revision asked for, when the origin has revisions
    commit: str | None  # the commit that revision resolved to
    size: int
    sha256: str
    time: str  # when it was placed, UTC, ISO 8601


@dataclass(frozen=True)
class FileChange:
    name: str
    problem: str  # "missing", "size", "sha256"
    detail: str


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def entry_for(folder: Path, target: Path, *, source: str, origin: str, path: str, revision: str | None = None,
              commit: str | None = None, sha256: str | None = None) -> ManifestEntry:
    return ManifestEntry(name=target.relative_to(folder).as_posix(), source=source, origin=origin, path=path,
                         revision=revision, commit=commit, size=target.stat().st_size,
                         sha256=sha256 or sha256_of(target),
                         time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def read_manifest(folder: Path) -> dict[str, ManifestEntry]:
    file = folder / MANIFEST_NAME
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
        return {name: ManifestEntry(**fields) for name, fields in data["files"].items()}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{file} is not a models.json this version can read ({error}); delete it and run "
                         "`uvidm weights download` again") from error


def record(folder: Path, entries: list[ManifestEntry]) -> Path:
    """Adds (or replaces) `entries` in the folder's manifest; written to a temporary name, then renamed."""
    manifest = read_manifest(folder)
    manifest.update({entry.name: entry for entry in entries})
    return _write(folder, manifest)


def _write(folder: Path, manifest: dict[str, ManifestEntry]) -> Path:
    file = folder / MANIFEST_NAME
    partial = file.with_name(file.name + ".partial")
    payload = {"format": MANIFEST_FORMAT,
               "files": {name: asdict(entry) for name, entry in sorted(manifest.items())}}
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(partial, file)
    return file


def changes(folder: Path) -> list[FileChange]:
    """Every recorded file that is no longer what was recorded (size first: it costs no read)."""
    found = []
    for name, entry in read_manifest(folder).items():
        path = folder / name
        if not path.is_file():
            found.append(FileChange(name, "missing", f"{path} is gone"))
        elif path.stat().st_size != entry.size:
            found.append(FileChange(name, "size", f"{path.stat().st_size} bytes, recorded {entry.size}"))
        elif sha256_of(path) != entry.sha256:
            found.append(FileChange(name, "sha256", f"content differs from the download of {entry.time}"))
    return found


def forget(folder: Path, name: str) -> None:
    """Drops `name` from the folder's manifest (a file that turned out bad is no longer vouched for)."""
    manifest = read_manifest(folder)
    if manifest.pop(name, None) is not None:
        _write(folder, manifest)

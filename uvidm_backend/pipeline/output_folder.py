"""All-or-nothing output: a result folder appears complete or not at all, files are never half written.

`OutputFolder` builds the result in a hidden sibling folder and renames it into place at the end;
`write_bytes`, `write_png` and `write_json` (data first, then path) write a file under a temporary name in
the same folder and `os.replace` it over the target. A crash, a cancelled job or a full disk leaves
either the old result or the new one, never a mixture (a reader such as the Blender add-on may be
watching the folder); a full disk raises `DiskFull`, naming the folder. Nothing here corresponds to
official UV-IDM code.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from uvidm_backend.pipeline.errors import UVIDMError
from uvidm_backend.pipeline.png import encode_png

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"  # `.<name>.partial-<random>`: a folder being written
OLD_MARK = ".old-"  # `.<name>.old-<random>`: a replaced folder about to be deleted
TMP_MARK = ".tmp-"  # `.<name>.tmp-<random>`: a file being written
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """A write failed for lack of space (or of quota), not for a reason the user must look into."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


class DiskFull(UVIDMError, OSError):
    """No space left (or the quota reached) on the disk of `folder`; nothing was left half-written.

    An OSError (errno ENOSPC), so code that survives failed writes survives this one too."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.message = f"no space left on the disk of {folder}: free some space and try again"
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message


class OutputFolderExists(UVIDMError, FileExistsError):
    """The output folder already holds files and overwriting was not asked for."""

    def __init__(self, target: Path, reason: str):
        self.target = target
        super().__init__(f"output folder {target} {reason}; choose another folder or allow overwriting (--overwrite)")


def _random_sibling(target: Path, mark: str) -> Path:
    return target.parent / f".{target.name}{mark}{secrets.token_hex(4)}"


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`.

    Same folder, so the replace is a rename on one file system (atomic); the data is flushed to
    disk first, so a crash cannot leave a renamed but empty file. On any error the temporary file
    is removed and an existing file at `path` is left as it was.
    """
    path = Path(path)
    while True:
        tmp = _random_sibling(path, TMP_MARK)
        try:
            handle = open(tmp, "xb")
        except FileExistsError:
            continue
        break
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in NO_SPACE and not isinstance(error, DiskFull):
            folder = path.parent.parent if PARTIAL_MARK in path.parent.name else path.parent
            raise DiskFull(folder) from error
        raise
    return path


def write_png(image: np.ndarray | Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write an 8-bit image (H, W), (H, W, 3) or (H, W, 4) uint8 array, or a PIL image, as a PNG, atomically.

    Deflated at `pipeline.png`'s fast default level: a folder run writes several 1024² textures a head, and a
    stronger level costs several times the time for a file a quarter smaller.

    Floating-point arrays are refused rather than guessed at (0..1 or 0..255?): convert first.
    Arrays and L/RGB/RGBA images are compressed on every core (`pipeline.png`); other PIL modes
    (palette, 16-bit) are saved by Pillow.
    """
    if isinstance(image, Image.Image) and image.mode not in ("L", "RGB", "RGBA"):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return write_bytes(buffer.getvalue(), path)
    return write_bytes(encode_png(np.asarray(image)), path)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays (coefficients, matrices) and paths turn up in result metadata
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps_json(data: Any) -> str:
    """JSON text as the backend writes it: sorted keys, indent 2, UTF-8 text, NaN and infinity refused."""
    return json.dumps(data, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False, default=_json_default) + "\n"


def write_json(data: Any, path: str | os.PathLike[str]) -> Path:
    """Write `data` as JSON (see `dumps_json`) atomically; a NaN raises ValueError and writes nothing."""
    return write_bytes(dumps_json(data).encode("utf-8"), path)


def _is_empty_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("could not remove %s; delete it by hand", path)


class OutputFolder:
    """Context manager: write a result into a hidden temporary folder, rename it into place on success.

    `with OutputFolder(target) as out:` creates `.<name>.partial-<random>` next to `target` (and
    the missing parents of `target`); files go into `out.path` (`out / "a.png"` is short for
    `out.path / "a.png"`). On a clean exit the folder is renamed to `target`; on an exception
    (cancellation included) it is deleted, together with the parents this object created, and the
    exception propagates.

    An existing `target` that is an empty folder is replaced. A non-empty one is refused with
    `OutputFolderExists` (at entry, before any work, and again at the end in case it appeared
    meanwhile) unless `overwrite=True`; then the old folder is renamed aside, the new one renamed
    in, and only then is the old one deleted, so a failure in between puts the old one back.
    """

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = False):
        self.target = Path(os.path.abspath(target))  # abspath folds "..", so the name is a real name
        if not self.target.name:
            raise ValueError(f"cannot write a result over {self.target}")
        self.overwrite = overwrite
        self.committed = False
        self._path: Path | None = None
        self._created_parents: list[Path] = []

    @property
    def path(self) -> Path:
        """The temporary folder to write into (valid inside the `with` block)."""
        if self._path is None:
            raise RuntimeError("OutputFolder.path is only available inside the `with` block")
        return self._path

    def __truediv__(self, name: str | os.PathLike[str]) -> Path:
        return self.path / name

    def _check_target(self) -> None:
        """Raise unless `target` is absent, an empty folder, or a folder we may overwrite."""
        target = self.target
        if not os.path.lexists(target):
            return
        if not target.is_dir():
            raise OutputFolderExists(target, "exists and is not a folder")
        if not self.overwrite and not _is_empty_dir(target):
            raise OutputFolderExists(target, "exists and is not empty")

    def __enter__(self) -> OutputFolder:
        if self._path is not None or self.committed:
            raise RuntimeError("an OutputFolder can be entered only once")
        self._check_target()
        missing = [p for p in (self.target.parent, *self.target.parent.parents) if not p.exists()]
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._created_parents = missing  # deepest first
            while True:
                candidate = _random_sibling(self.target, PARTIAL_MARK)
                try:
                    candidate.mkdir()  # not tempfile.mkdtemp: its 0o700 mode would stick to the result
                except FileExistsError:
                    continue
                break
        except OSError as error:
            self._remove_created_parents()
            if error.errno in NO_SPACE:
                raise DiskFull(self.target.parent) from error
            raise
        self._path = candidate
        log.debug("writing %s into %s", self.target, candidate)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        partial = self.path
        try:
            if exc_type is None:
                self._commit(partial)
        finally:
            if not self.committed:
                _remove_tree(partial)
                self._remove_created_parents()
            self._path = None

    def _commit(self, partial: Path) -> None:
        target = self.target
        self._check_target()
        if os.path.lexists(target):
            if _is_empty_dir(target):
                os.rmdir(target)  # an empty folder: no rename aside needed (Windows cannot rename over it)
            else:
                self._replace(partial)
                return
        try:
            os.rename(partial, target)
        except OSError as error:
            if os.path.lexists(target):  # another writer got there between the check and the rename
                raise OutputFolderExists(target, "appeared while the result was being written") from error
            raise
        self.committed = True
        log.info("wrote %s", target)

    def _replace(self, partial: Path) -> None:
        target = self.target
        old = _random_sibling(target, OLD_MARK)
        os.rename(target, old)
        try:
            os.rename(partial, target)
        except BaseException:
            os.rename(old, target)
            raise
        self.committed = True
        _remove_tree(old)
        log.info("replaced %s", target)

    def _remove_created_parents(self) -> None:
        for parent in self._created_parents:
            try:
                parent.rmdir()
            except FileNotFoundError:
                continue  # never made: the mkdir failed below it
            except OSError:
                break
        self._created_parents = []

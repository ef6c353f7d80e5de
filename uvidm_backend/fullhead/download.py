"""Fetching the ICT FaceKit model files (MIT licence, USC ICT) into a model folder.

`download_full_head(model_dir)` downloads `FaceXModel/`'s files of ICT-VGL/ICT-FaceKit at a fixed commit
from GitHub's raw file server (base URL overridable with $UVIDM_ICT_BASE_URL, e.g. a mirror or a test
server), or copies them from a local checkout (`source_dir`: its `FaceXModel/` folder). Each file is
written under a temporary name and renamed once complete; the model is then read once (which checks
every file) and converted into the cache `ict_files.load_ict_model` reads in milliseconds. The records
returned (name, source, size, sha256) are what models.json keeps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uvidm_backend.fullhead.ict_files import (
    CACHE_FILE,
    INDICES_FILE,
    NEUTRAL_FILE,
    ICTFileError,
    _read_indices,
    load_ict_model,
)
from uvidm_backend.model_files.manifest import sha256_of
from uvidm_backend.model_files.transfer import Progress, TransferError, http_download, place_file

log = logging.getLogger(__name__)

ICT_REPOSITORY = "ICT-VGL/ICT-FaceKit"
ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
BASE_URL_ENV = "UVIDM_ICT_BASE_URL"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{ICT_REPOSITORY}/{ICT_COMMIT}"
MODEL_SUBFOLDER = "FaceXModel"
LICENSE_FILE = "LICENSE"
IDENTITY_COUNT = 100  # identity000.obj .. identity099.obj at ICT_COMMIT

# The licence of the files (ICT-FaceKit/LICENSE), shown when a local checkout has no LICENSE file.
ICT_LICENSE = """MIT License

Copyright (c) 2020 USC Institute for Creative Technologies

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

#: progress(file name, files done, file count)
DownloadProgress = Callable[[str, int, int], None]


class FullHeadDownloadError(ICTFileError):
    """A file that could not be fetched or copied; the message says which and why."""


@dataclass(frozen=True)
class FetchedFile:
    """One file of the full-head model as placed in the model folder (a models.json record)."""

    name: str
    source: str  # URL or local path it came from
    size: int
    sha256: str


def base_url() -> str:
    return os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL).rstrip("/")


def _download(url: str, target: Path) -> None:
    """Resumable (a cut transfer continues from its `.partial` file on the next run)."""
    try:
        http_download(url, target, Progress(0))
    except TransferError as error:
        problem = str(error).removeprefix(f"{url}: ")
        raise FullHeadDownloadError(url, f"{problem}; download again to resume") from error


def _copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise FullHeadDownloadError(source, "is missing in the ICT-FaceKit checkout")
    place_file(source, target)


def _model_names(indices_file: Path, identity_names: list[str]) -> list[str]:
    expressions = _read_indices(indices_file.parent)["expressions"]
    return [NEUTRAL_FILE, *identity_names, *(f"{name}.obj" for name in expressions)]


def download_full_head(model_dir: str | os.PathLike[str], source_dir: str | os.PathLike[str] | None = None,
                       progress: DownloadProgress | None = None, *, identity_count: int = IDENTITY_COUNT,
                       show_licence: Callable[[str], None] = print) -> list[FetchedFile]:
    """Fetches (or copies from `source_dir`, a checkout's FaceXModel/ folder) the ICT FaceKit files into
    `model_dir`, checks and converts them (`ict_model.npz`), shows the licence; returns one record a file.

    Files already in `model_dir` are kept (they are only ever renamed into place once complete).
    `identity_count`: identity shapes to fetch from a URL (a checkout gives all it has).
    """
    folder = Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    source_folder = Path(source_dir) if source_dir is not None else None
    if source_folder is not None and (source_folder / MODEL_SUBFOLDER).is_dir():
        source_folder = source_folder / MODEL_SUBFOLDER  # the checkout's root was given
    url = base_url()

    def origin(name: str) -> str:
        if source_folder is not None:
            path = source_folder.parent / name if name == LICENSE_FILE else source_folder / name
            return str(path.resolve())
        return f"{url}/{name}" if name == LICENSE_FILE else f"{url}/{MODEL_SUBFOLDER}/{name}"

    def fetch(name: str) -> None:
        target = folder / name
        if target.is_file():
            return
        if source_folder is not None:
            _copy(Path(origin(name)), target)
        else:
            _download(origin(name), target)

    fetch(INDICES_FILE)
    if source_folder is not None:
        identities = sorted(path.name for path in source_folder.glob("identity[0-9][0-9][0-9].obj"))
        if not identities:
            raise FullHeadDownloadError(source_folder, "holds no identity000.obj: give the FaceXModel/ folder")
    else:
        identities = [f"identity{k:03d}.obj" for k in range(identity_count)]
    names = [INDICES_FILE, *_model_names(folder / INDICES_FILE, identities)]
    licence_available = source_folder is None or (source_folder.parent / LICENSE_FILE).is_file()
    if licence_available:
        names.append(LICENSE_FILE)
    for done, name in enumerate(names):
        if progress is not None:
            progress(name, done, len(names))
        fetch(name)
    if progress is not None:
        progress("", len(names), len(names))
    licence = (folder / LICENSE_FILE).read_text() if licence_available else ICT_LICENSE
    show_licence(f"The ICT FaceKit model ({ICT_REPOSITORY}) is used under this licence:\n\n{licence}")
    (folder / CACHE_FILE).unlink(missing_ok=True)
    load_ict_model(folder)  # reads every file once: a broken one fails here, not in a request
    return [FetchedFile(name, origin(name), (folder / name).stat().st_size, sha256_of(folder / name))
            for name in names]

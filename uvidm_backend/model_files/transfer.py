"""Moving bytes: progress that reaches the caller, resumable plain HTTP, placing files atomically.

Every transfer goes through `http_download`, which resumes from a `.partial` file with a Range request
(huggingface_hub 2.x deletes its partial files when a download fails, so a cut hub download would
start again from zero; its cache is still read first, and it still resolves the hub's URLs).
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from uvidm_backend.model_files.manifest import sha256_of
from uvidm_backend.pipeline.errors import Cancelled

CHUNK = 1 << 20
TIMEOUT_S = 30


@dataclass
class Progress:
    """Bytes done over the whole download and within the current file; `on_change` hears every update."""

    total_bytes: int
    on_change: Callable[[Progress], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    show_bars: bool = False
    file: str = ""
    file_done: int = 0
    file_total: int = 0
    done_before: int = 0  # bytes of the files finished before this one

    @property
    def done_bytes(self) -> int:
        return self.done_before + self.file_done

    def start_file(self, name: str, size: int) -> None:
        self.file, self.file_done, self.file_total = name, 0, size
        self._changed()

    def advance(self, done: int) -> None:
        if self.cancel.is_set():
            raise Cancelled("download cancelled")
        self.file_done = min(done, self.file_total or done)
        self._changed()

    def finish_file(self) -> None:
        self.done_before += self.file_total
        self.file_done = 0
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def bar_class(self) -> type[tqdm]:
        """A tqdm class for huggingface_hub that forwards its counts here (and raises when cancelled)."""
        progress = self

        class ForwardingBar(tqdm):
            def __init__(self, *args, **kwargs):
                kwargs.pop("name", None)
                kwargs["desc"] = progress.file  # huggingface_hub's would be the cache path
                kwargs.setdefault("disable", not progress.show_bars)
                super().__init__(*args, **kwargs)
                progress.advance(int(self.n))

            def update(self, n: float | None = 1) -> bool | None:
                shown = super().update(n)
                progress.advance(int(self.n))
                return shown

        return ForwardingBar


class TransferError(OSError):
    """A plain HTTP download failed (network, status or checksum); the message says which."""


def http_download(url: str, target: Path, progress: Progress, *, expected_sha256: str | None = None,
                  expected_size: int | None = None, headers: dict[str, str] | None = None) -> Path:
    """GET `url` into `target` (via `target.partial`, resumed when present); checks the sha256 when given.
    Reports to `progress` within the current file (the caller starts and finishes it)."""
    partial = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.is_file() else 0
    if expected_size is not None and have > expected_size:
        partial.unlink()
        have = 0
    request = urllib.request.Request(url, headers={**(headers or {}), **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the partial file is already complete (or longer than the file)
            partial.unlink()
            return http_download(url, target, progress, expected_sha256=expected_sha256, expected_size=expected_size,
                                 headers=headers)
        raise TransferError(f"{url}: the server answered {error.code} {error.reason}") from error
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise TransferError(f"{url}: cannot be reached ({getattr(error, 'reason', error)})") from error
    with response:
        if have and response.status != 206:  # the server ignored the Range request: start again
            have = 0
        length = response.headers.get("Content-Length")
        size = expected_size or ((int(length) + have) if length else 0)
        if not progress.file_total and size:  # a file of unknown size until now: the total grows by it
            progress.file_total = size
            progress.total_bytes += size
        progress.advance(have)
        bar = progress.bar_class()(total=size or None, initial=have, unit="B", unit_scale=True, desc=target.name)
        try:
            with open(partial, "ab" if have else "wb") as file:
                while block := response.read(CHUNK):
                    file.write(block)
                    bar.update(len(block))
        except (TimeoutError, ConnectionError, urllib.error.URLError) as error:
            raise TransferError(f"{url}: the transfer broke off after {partial.stat().st_size} bytes "
                                f"({error})") from error
        finally:
            bar.close()
    if size and partial.stat().st_size < size:  # the server closed the connection early
        raise TransferError(f"{url}: the transfer broke off after {partial.stat().st_size} of {size} bytes")
    if expected_sha256 is not None:
        digest = sha256_of(partial)
        if digest != expected_sha256:
            partial.unlink()
            raise TransferError(f"{url}: sha256 {digest} is not the expected {expected_sha256}; the file was "
                                "deleted")
    os.replace(partial, target)
    return target



def place_file(source: Path, target: Path) -> None:
    """Hard-links (copies across file systems) `source` to `target` under a temporary name, then renames."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    source = source.resolve()  # the hub cache's snapshot entries are relative symlinks to its blobs
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)

"""Many photos to many folders at the GPU's pace: `uvidm generate PHOTOS_OR_FOLDERS... --batch-size N`.

Four things overlap: threads decode the photos and find their faces ahead of the networks, the networks
run a batch of photos at a time (`Pipeline.run_networks`), on a GPU a thread finishes the previous batch's
heads meanwhile (`Pipeline.finish`: meshes, previews, result.json, on a CUDA stream of its own), and writers
(`writers.FolderWriters`: worker processes beside a GPU, else threads) encode and write the folders of the
batch before. Each folder is written atomically; a photo that fails fails alone, and the run lists them in
`failures.json`. A folder already complete (`folder_is_complete`) is skipped, so that a run that stopped can
be started again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from uvidm_backend.pipeline.files import folder_is_complete
from uvidm_backend.pipeline.gil import quick_gil_handoffs
from uvidm_backend.pipeline.options import GenerateOptions
from uvidm_backend.pipeline.output_folder import write_json
from uvidm_backend.pipeline.writers import FolderWriters, default_write_processes

log = logging.getLogger(__name__)

FAILURES_FILE = "failures.json"
# Image files a folder argument expands to (by suffix, case-insensitive).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic",
                            ".heif"})
#: GPU memory one photo of a batch takes at most (1024 textures, a 12-megapixel photo), for the default batch size.
GPU_BYTES_PER_PHOTO = 2 << 30
MAX_DEFAULT_BATCH = 32


@dataclass(frozen=True)
class PhotoJob:
    """One photo of a run and the folder its head goes to."""

    photo: Path
    folder: Path
    options: GenerateOptions


@dataclass(frozen=True)
class Failure:
    photo: str
    folder: str
    error: str


@dataclass
class RunSummary:
    done: list[PhotoJob] = field(default_factory=list)
    skipped: list[PhotoJob] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0


def expand_photos(arguments: Iterable[Path]) -> list[Path]:
    """Photo paths as given, each folder replaced by the image files in it (sorted by name, not recursive)."""
    photos = []
    for argument in arguments:
        if argument.is_dir():
            photos += sorted((path for path in argument.iterdir()
                              if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES and
                              not path.name.startswith(".")), key=lambda path: path.name)
        else:
            photos.append(argument)
    return photos


def output_folders(photos: Sequence[Path], root: Path) -> list[Path]:
    """DIR/<stem>, with a suffix when two photos share a name."""
    seen: dict[str, int] = {}
    folders = []
    for photo in photos:
        count = seen.get(photo.stem, 0)
        seen[photo.stem] = count + 1
        folders.append(root / (photo.stem if count == 0 else f"{photo.stem}-{count + 1}"))
    return folders


def default_batch_size(device: torch.device) -> int:
    """From the GPU's free memory (`GPU_BYTES_PER_PHOTO` a photo, at most `MAX_DEFAULT_BATCH`); 1 on the CPU,
    where a batch is no faster than its photos one by one (docs/PERFORMANCE.md)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_DEFAULT_BATCH, free // GPU_BYTES_PER_PHOTO))


def write_failures(root: Path, failures: Sequence[Failure], total: int) -> Path | None:
    """`failures.json` in `root` (atomically), or none (an old one removed) when nothing failed."""
    path = root / FAILURES_FILE
    if not failures:
        path.unlink(missing_ok=True)
        return None
    root.mkdir(parents=True, exist_ok=True)
    write_json({"total": total, "failed": len(failures),
                "failures": [{"photo": f.photo, "folder": f.folder, "error": f.error} for f in failures]}, path)
    return path


def run_jobs(pipeline, jobs: Sequence[PhotoJob], batch_size: int, overwrite: bool = False,
             on_result: Callable[[PhotoJob, str, str | None], None] | None = None,
             prepare_threads: int | None = None, writers: FolderWriters | None = None,
             finish_beside: bool | None = None) -> RunSummary:
    """Every job's head into its folder, `batch_size` photos through the networks at a time.

    `on_result(job, "done" | "skipped" | "failed", error)` is called from this thread as each job ends.
    `writers`: where the folders are written (default: a `FolderWriters` of `default_write_processes`, opened
    and closed by this run; pass one to keep its processes across runs).
    `finish_beside`: finish each batch on a second thread while the next batch's networks run (default: on
    CUDA; on the CPU the two would only share the same cores).
    """
    summary = RunSummary()
    started = time.perf_counter()

    def report(job: PhotoJob, state: str, error: str | None = None) -> None:
        if state == "done":
            summary.done.append(job)
        elif state == "skipped":
            summary.skipped.append(job)
        else:
            summary.failures.append(Failure(str(job.photo), str(job.folder), error or "failed"))
        if on_result is not None:
            on_result(job, state, error)

    todo = []
    for job in jobs:
        if not overwrite and folder_is_complete(job.folder):
            report(job, "skipped")
        else:
            todo.append(job)
    batch_size = max(1, batch_size)
    # Decoding and alignment mostly release the GIL: a few threads keep ahead of the GPU, more only compete
    # with its thread for the GIL.
    prepare_threads = prepare_threads or max(1, min(4, (os.cpu_count() or 2) - 1))
    own_writers = writers is None and bool(todo)
    if own_writers:
        writers = FolderWriters(default_write_processes(pipeline.device.type))
    # The GPU's thread (this one) shares the process with the preparing threads, the finishing thread and the
    # pickling of heads for the writers: quick GIL hand-offs keep its launches from waiting on them.
    with ThreadPoolExecutor(prepare_threads, thread_name_prefix="uvidm-prepare") as preparers, \
            ThreadPoolExecutor(1, thread_name_prefix="uvidm-finish") as finisher_thread, \
            (writers if own_writers else nullcontext()), quick_gil_handoffs():
        ahead: deque[tuple[PhotoJob, Future]] = deque()
        finishing: deque[tuple[list, Future]] = deque()
        writing: deque[tuple[PhotoJob, Future]] = deque()
        pending: dict[tuple, list] = {}
        queue = iter(todo)

        def fill() -> None:
            # Photos are prepared up to two batches ahead of the networks.
            while len(ahead) < 2 * batch_size:
                job = next(queue, None)
                if job is None:
                    return
                ahead.append((job, preparers.submit(pipeline.prepare, job.photo, job.options)))

        def collect_writes(keep: int) -> None:
            while len(writing) > keep:
                job, future = writing.popleft()
                try:
                    future.result()
                except Exception as error:  # noqa: BLE001 - this photo's folder fails alone
                    report(job, "failed", _message(error, job))
                else:
                    report(job, "done")

        def finish_and_write(batch: list, networks, batch_started: float) -> list:
            # On the finishing thread: the batch's heads, each handed to the writers at once (packing a head for a
            # writer process copies megabytes: not on the GPU's thread).
            outcomes = []
            for (job, _), result in zip(batch, pipeline.finish(networks), strict=True):
                if not isinstance(result, BaseException):
                    try:
                        result = writers.submit(result, job.folder, overwrite, batch_started)
                    except Exception as error:  # noqa: BLE001 - this photo's folder fails alone
                        result = error
                outcomes.append(result)
            return outcomes

        def deliver_finished() -> None:
            while finishing:
                batch, future = finishing.popleft()
                for (job, _), outcome in zip(batch, future.result(), strict=True):
                    if isinstance(outcome, BaseException):
                        report(job, "failed", _message(outcome, job))
                    else:
                        writing.append((job, outcome))
                # At most two batches' heads in memory (and at least every writer busy).
                collect_writes(keep=max(2 * batch_size, writers.slots))

        def run(batch: list) -> None:
            batch_started = time.perf_counter()
            networks = pipeline.run_networks([prepared for _, prepared in batch], run_batch=batch_size)
            # The previous batch was finished (meshes, previews) on the other thread while these networks ran.
            deliver_finished()
            finishing.append((batch, finisher.submit(finish_and_write, batch, networks, batch_started)))

        if finish_beside is None:
            finish_beside = pipeline.device.type == "cuda"
        finisher = finisher_thread if finish_beside else _Inline()

        fill()
        while ahead:
            job, future = ahead.popleft()
            fill()
            try:
                prepared = future.result()
            except Exception as error:  # noqa: BLE001 - a photo that cannot be read or has no face fails alone
                report(job, "failed", _message(error, job))
                continue
            key = job.options.batch_key()
            pending.setdefault(key, []).append((job, prepared))
            if len(pending[key]) >= batch_size:
                run(pending.pop(key))
        for batch in pending.values():
            run(batch)
        deliver_finished()
        collect_writes(keep=0)
    summary.seconds = time.perf_counter() - started
    return summary


class _Inline:
    """An executor that runs each call at once, on the caller's thread."""

    @staticmethod
    def submit(function: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:  # noqa: BLE001 - raised from the future, as on a thread
            future.set_exception(error)
        return future


def _message(error: BaseException, job: PhotoJob) -> str:
    from uvidm_backend.pipeline.errors import UVIDMError
    from uvidm_backend.pipeline.output_folder import is_disk_full

    if is_disk_full(error):
        return (f"no space left on the disk of {job.folder.parent} (nothing of this photo was kept): free some "
                "space and run it again")
    if isinstance(error, UVIDMError | FileExistsError | OSError):
        return str(error)
    log.error("a photo failed", exc_info=error)
    return f"internal error ({type(error).__name__}): {error}"

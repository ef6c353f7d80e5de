"""Where finished heads are written while the networks go on: threads, or worker processes on a machine with
cores to spare.

Writing a head's folder is CPU work (PNG, GLB, OBJ text). Zlib and numpy release the GIL, but formatting the
OBJ's lines holds it for tens of milliseconds a head; on threads beside the GPU's thread, every kernel launch
of that thread then waits for the GIL, and a batch's per-photo steps slow down several times. Worker
processes have a GIL each: the GPU's process only pickles the head (a few megabytes of arrays) across.
They run at a lower CPU priority, so that their threads do not take the cores the GPU's thread needs.
They are started with "spawn" (a forked copy of a process that holds CUDA is unsafe) and import the
writing code once, when the pool opens, while the first batch runs.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from uvidm_backend.pipeline.files import Head, write_head_folder
from uvidm_backend.pipeline.png import available_cores

__all__ = ["FolderWriters", "default_write_processes"]

#: Writer threads when no processes are used (each folder's files are also written side by side inside).
WRITE_THREADS = 2
MAX_WRITE_PROCESSES = 8
#: Below this many cores the networks (on the CPU) or the photos' preparation need them more than writers do.
MIN_CORES_FOR_PROCESSES = 8


def default_write_processes(device_type: str, cores: int | None = None) -> int:
    """Writer processes for a run on `device_type`: half the cores (at most 8) beside a GPU on a machine of
    8 or more cores, else none (threads)."""
    cores = cores or available_cores()
    if device_type == "cpu" or cores < MIN_CORES_FOR_PROCESSES:
        return 0
    return min(MAX_WRITE_PROCESSES, cores // 2)


#: How much lower the writer processes' CPU priority is (POSIX nice): their PNG bands and threads would
#: otherwise take every core from the thread that feeds the GPU.
WRITER_NICENESS = 5


def _start_writer() -> None:
    if hasattr(os, "nice"):
        os.nice(WRITER_NICENESS)


def _ready() -> int:
    return os.getpid()


class FolderWriters:
    """`write_head_folder` calls run on `processes` worker processes (0: on `WRITE_THREADS` threads of this
    process). Reusable across runs; `close` (or leaving the `with` block) waits for the writes in flight."""

    def __init__(self, processes: int = 0):
        self.processes = max(0, processes)
        if self.processes:
            self._executor: Executor = ProcessPoolExecutor(self.processes, initializer=_start_writer,
                                                           mp_context=multiprocessing.get_context("spawn"))
            # Start every worker now: each imports the writing code (and torch, a second or two) while the
            # caller loads models or runs its first batch.
            for _ in range(self.processes):
                self._executor.submit(_ready)
        else:
            self._executor = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="uvidm-write")

    @property
    def slots(self) -> int:
        """How many folders are written at once."""
        return self.processes or WRITE_THREADS

    def submit(self, head: Head, folder: Path, overwrite: bool = False, started: float | None = None) -> Future:
        """`write_head_folder(head, folder, overwrite, started)` on a writer; the future raises its error.

        `started` is a `time.perf_counter()` value: the processes of one machine share that clock.
        """
        return self._executor.submit(write_head_folder, head, folder, overwrite, started)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> FolderWriters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

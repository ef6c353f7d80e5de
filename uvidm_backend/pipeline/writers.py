"""Where finished heads are written while the networks go on: threads, or worker processes on a machine with
cores to spare.

Writing a head's folder is CPU work (PNG, GLB, OBJ text). Zlib and numpy release the GIL, but the Python
around them holds it, and every kernel launch of the GPU's thread waits for the GIL: beside threads that
write, a batch's many small launches slow down several times. Worker processes have a GIL each. Their
heads' images (tens of megabytes a batch) reach them through shared memory, so that the GPU's process only
copies them once, without the GIL, instead of pickling them through a pipe. Each process writes on one
thread (one PNG band at a time) and the pool leaves cores free: the GPU's thread, the finishing thread and
the photos' preparation need them (scheduling by priority alone, `WRITER_NICENESS`, is not honoured by every
container runtime). Processes are started with "spawn" (a forked copy of a process that holds CUDA is
unsafe) and import the writing code once, when the pool opens, while the first batch runs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from uvidm_backend.pipeline import png
from uvidm_backend.pipeline.files import Head, write_head_folder
from uvidm_backend.pipeline.png import available_cores

__all__ = ["FolderWriters", "default_write_processes"]

#: Writer threads when no processes are used (each folder's files are also written side by side inside).
WRITE_THREADS = 2
MAX_WRITE_PROCESSES = 12
#: Below this many cores the networks (on the CPU) or the photos' preparation need them more than writers do.
MIN_CORES_FOR_PROCESSES = 8
#: Cores left to the GPU's process (its thread, the finishing thread, the preparing threads).
CORES_KEPT = 4
#: Threads of a writer process writing one folder's files (each PNG in one band). One: a process's threads share
#: its GIL, and on an H100 machine of 16 cores 12 processes of one thread wrote 28.3 heads/s where 6 of two
#: wrote 19.7 (docs/PERFORMANCE.md).
PROCESS_FOLDER_THREADS = 1
#: How much lower the writer processes' CPU priority is (POSIX nice).
WRITER_NICENESS = 10
#: The head's images sent through shared memory (the mesh's texture is the albedo itself).
SHARED_IMAGES = ("albedo", "albedo_model", "albedo_model_matched", "preview")


def default_write_processes(device_type: str, cores: int | None = None) -> int:
    """Writer processes for a run on `device_type`: beside a GPU on a machine of 8 or more cores, one for each
    core beyond the `CORES_KEPT` (at most 12), else none (threads)."""
    cores = cores or available_cores()
    if device_type == "cpu" or cores < MIN_CORES_FOR_PROCESSES:
        return 0
    return max(1, min(MAX_WRITE_PROCESSES, cores - CORES_KEPT))


def _start_writer() -> None:
    if hasattr(os, "nice"):
        os.nice(WRITER_NICENESS)
    png.limit_threads(1)


def _ready() -> int:
    return os.getpid()


class FolderWriters:
    """`write_head_folder` calls run on `processes` worker processes, each writing a folder's files on
    `folder_threads` threads (0 processes: on `WRITE_THREADS` threads of this process). Reusable across runs;
    `close` (or leaving the `with` block) waits for the writes in flight."""

    def __init__(self, processes: int = 0, folder_threads: int = PROCESS_FOLDER_THREADS):
        self.processes = max(0, processes)
        self.folder_threads = max(1, folder_threads)
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
        if not self.processes:
            return self._executor.submit(write_head_folder, head, folder, overwrite, started)
        block, shared = _share_images(head)
        try:
            future = self._executor.submit(write_head_folder, shared, folder, overwrite, started,
                                           self.folder_threads)
        except BaseException:
            block.unlink()
            raise
        # Written (or failed): the name goes; this process's mapping goes with the last of its images.
        future.add_done_callback(lambda _: block.unlink())
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def __enter__(self) -> FolderWriters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _SharedImage(np.ndarray):
    """A read-only image in a shared-memory block: pickled as the block's name and the image's place in it; the
    process that unpickles it copies it out (and lets go of the block at once). It holds the block, which
    unmaps when its last image goes."""

    _block: shared_memory.SharedMemory
    _offset: int

    def __reduce__(self):
        block = getattr(self, "_block", None)
        if block is None:  # a view made from it: an ordinary array
            return np.asarray(self).__reduce__()
        return _copy_out, (block.name, self._offset, self.shape, self.dtype.str)

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


def _share_images(head: Head) -> tuple[shared_memory.SharedMemory, Head]:
    """`head` with its images (`SHARED_IMAGES`) in one new shared-memory block, and the block (the caller
    unlinks it once the head is written)."""
    images = {name: np.ascontiguousarray(getattr(head, name)) for name in SHARED_IMAGES}
    block = shared_memory.SharedMemory(create=True, size=max(1, sum(image.nbytes for image in images.values())))
    shared, offset = {}, 0
    try:
        for name, image in images.items():
            view = np.ndarray(image.shape, image.dtype, buffer=block.buf, offset=offset).view(_SharedImage)
            np.copyto(view, image)  # large copies run without the GIL
            view.setflags(write=False)
            view._block, view._offset = block, offset
            shared[name] = view
            offset += image.nbytes
        mesh = head.mesh
        if mesh.texture is head.albedo:  # one image, not two
            mesh = dataclasses.replace(mesh, texture=shared["albedo"])
        return block, dataclasses.replace(head, mesh=mesh, **shared)
    except BaseException:
        shared.clear()
        block.unlink()
        raise


def _copy_out(name: str, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    block = _attach(name)
    try:
        view = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset)
        image = view.copy()
        del view
    finally:
        block.close()
    image.setflags(write=False)
    return image


def _attach(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):  # the creating process unlinks it: no tracking here
        return shared_memory.SharedMemory(name=name, track=False)
    return shared_memory.SharedMemory(name=name)

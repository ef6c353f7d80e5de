"""Where finished heads are written while the networks go on: threads, or worker processes on a machine with
cores to spare.

Writing a head's folder is CPU work (PNG, GLB, OBJ text). Zlib and numpy release the GIL, but the Python
around them holds it, and every kernel launch of the GPU's thread waits for the GIL: beside threads that
write, a batch's many small launches slow down several times. Worker processes have a GIL each. Their
heads' arrays (images, meshes, full heads: megabytes a head) reach them through shared memory (`_Transport`),
so that the GPU's process copies them once, without the GIL, and the pool's one pipe, fed by one thread to
processes at a lower priority, carries kilobytes a head. Each process writes on one
thread (one PNG band at a time) and the pool leaves cores free: the GPU's thread, the finishing thread and
the photos' preparation need them (scheduling by priority alone, `WRITER_NICENESS`, is not honoured by every
container runtime). Processes are started with "spawn" (a forked copy of a process that holds CUDA is
unsafe) and import the writing code once, when the pool opens, while the first batch runs.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import sys
import threading
import weakref
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from uvidm_backend.pipeline import png
from uvidm_backend.pipeline.files import Head, write_head_folder
from uvidm_backend.pipeline.png import available_cores

__all__ = ["FolderWriters", "default_write_processes"]

log = logging.getLogger(__name__)

#: Writer threads when no processes are used (each folder's files are also written side by side inside).
WRITE_THREADS = 2
#: On an H100 machine of 16 cores, with heads sent through shared memory, 8 processes of one thread made 40.0
#: heads/s (DPM++ 20, batch 32) and 6 made 41.5, in two calls (docs/PERFORMANCE.md); the GPU's process keeps
#: the other cores busy.
MAX_WRITE_PROCESSES = 8
#: Below this many cores the networks (on the CPU) or the photos' preparation need them more than writers do.
MIN_CORES_FOR_PROCESSES = 8
#: Cores left to the GPU's process (its thread, the finishing thread, the preparing threads, the pool's feeder).
CORES_KEPT = 8
#: Threads of a writer process writing one folder's files (each PNG in one band). One: a process's threads share
#: its GIL, and on an H100 machine of 16 cores 12 processes of one thread wrote 28.3 heads/s where 6 of two
#: wrote 19.7 (docs/PERFORMANCE.md, eighth session).
PROCESS_FOLDER_THREADS = 1
#: How much lower the writer processes' CPU priority is (POSIX nice).
WRITER_NICENESS = 10
#: Arrays under this size travel inside a head's pickle, not through shared memory.
MIN_SHARED_BYTES = 1 << 16
#: Heads' blocks are made in multiples of this size, so that a block freed by one head fits the next.
BLOCK_GRANULE = 1 << 20
#: Blocks of written heads kept for later heads, at most (more are removed as they come back).
FREE_BLOCKS_KEPT = 128
#: Where POSIX shared memory lives on Linux: a tmpfs that may be small (64 MB in a default Docker container),
#: and writing past its end kills the process (SIGBUS).
SHARED_MEMORY_DIR = "/dev/shm"


def default_write_processes(device_type: str, cores: int | None = None) -> int:
    """Writer processes for a run on `device_type`: beside a GPU on a machine of 8 or more cores, one for each
    core beyond the `CORES_KEPT` (at least 1, at most 8), else none (threads)."""
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
        self._transport = _Transport() if self.processes else None
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
        transport = self._transport
        payload, places, block = transport.pack(head)
        try:
            future = self._executor.submit(_write_packed, payload, places, block and block.name, folder, overwrite,
                                           started, self.folder_threads)
        except BaseException:
            if block is not None:
                transport.release(block)
            raise
        if block is not None:  # written (or failed): the block serves a later head
            future.add_done_callback(lambda _: transport.release(block))
        return future

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._transport is not None:
            self._transport.close()

    def __enter__(self) -> FolderWriters:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transport:
    """Heads pickled for the writer processes with their arrays in shared memory, so that the pipe to the pool
    (one for all its processes, fed by one thread) carries a few kilobytes a head instead of megabytes.

    An array that comes back in a later head (the same read-only object: the model's faces, UVs, morph-target
    rows) is copied once into a block of its own, which the writers map once and keep: each of them holds one
    array object for it, so their caches keyed by identity (an OBJ's face lines) hit. The head's other arrays go
    into one block per head, which the writer copies out of at once; once the folder is written the caller
    `release`s it for a later head: a fresh block costs a page fault every 4 KB as it is filled (4 against 0.2 ms
    for a head's 5.6 MB on the development machine), and its mapping and unmapping lock the process's memory
    map. Where shared memory has no room for a new block, the head travels in its pickle (slowly, but whole).
    """

    def __init__(self):
        self._seen: dict[int, weakref.ref] = {}  # read-only arrays sent once, by id
        self._constants: dict[int, tuple[np.ndarray, shared_memory.SharedMemory]] = {}
        self._free: list[shared_memory.SharedMemory] = []  # blocks of written heads
        self._closed = False
        self._warned = False
        self._lock = threading.Lock()  # runs that share the writers may pack on threads of their own

    def pack(self, head: Head) -> tuple[bytes, list[tuple], shared_memory.SharedMemory | None]:
        """(pickle, the head's arrays' places in its block, the block) for `_write_packed`."""
        with self._lock:
            return self._pack(head)

    def _pack(self, head: Head) -> tuple[bytes, list[tuple], shared_memory.SharedMemory | None]:
        arrays: list[np.ndarray] = []
        ids: dict[int, tuple] = {}  # an array the head holds twice (the albedo is the mesh's texture) goes once
        transport = self

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if type(obj) is not np.ndarray or obj.nbytes < MIN_SHARED_BYTES or obj.dtype.hasobject:
                    return None
                pid = ids.get(id(obj))
                if pid is None:
                    block = transport._constant(obj)
                    if block is not None:
                        pid = ("constant", block.name, obj.shape, obj.dtype.str)
                    else:
                        arrays.append(obj)
                        pid = ("head", len(arrays) - 1)
                    ids[id(obj)] = pid
                return pid

        buffer = io.BytesIO()
        Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(head)
        places, size = [], 0
        for array in arrays:
            places.append((size, array.shape, array.dtype.str))
            size += -(-array.nbytes // 64) * 64
        if not arrays:
            return buffer.getvalue(), places, None
        block = self._block(size)
        if block is None:  # no room in shared memory: the whole head in the pickle
            if not self._warned:
                self._warned = True
                log.warning("shared memory (%s) has no room for a head's %.0f MB: heads go to the writer processes "
                            "through their pipe, which is slower (in a container, give it more, e.g. docker run "
                            "--shm-size=4g)", SHARED_MEMORY_DIR, size / 1e6)
            return pickle.dumps(head, protocol=pickle.HIGHEST_PROTOCOL), [], None
        try:
            for array, (offset, shape, dtype) in zip(arrays, places, strict=True):
                np.copyto(np.ndarray(shape, dtype, buffer=block.buf, offset=offset), array)  # without the GIL
        except BaseException:
            self._release(block)
            raise
        return buffer.getvalue(), places, block

    def _block(self, size: int) -> shared_memory.SharedMemory | None:
        """The smallest free block of at least `size` bytes, else a new one (None where there is no room)."""
        fitting = [block for block in self._free if block.size >= size]
        if fitting:
            block = min(fitting, key=lambda block: block.size)
            self._free.remove(block)
            return block
        return _new_block(-(-size // BLOCK_GRANULE) * BLOCK_GRANULE)

    def release(self, block: shared_memory.SharedMemory) -> None:
        """Takes back the block of a head whose folder is written (or failed)."""
        with self._lock:
            self._release(block)

    def _release(self, block: shared_memory.SharedMemory) -> None:
        self._free.append(block)
        if self._closed or len(self._free) > FREE_BLOCKS_KEPT:
            _remove(self._free.pop(0))

    def _constant(self, array: np.ndarray) -> shared_memory.SharedMemory | None:
        key = id(array)
        kept = self._constants.get(key)
        if kept is not None and kept[0] is array:
            return kept[1]
        if array.flags.writeable:  # may change: never shared between heads
            return None
        seen = self._seen.get(key)
        if seen is None or seen() is not array:
            def forget(ref: weakref.ref, key: int = key) -> None:
                if self._seen.get(key) is ref:
                    del self._seen[key]

            self._seen[key] = weakref.ref(array, forget)
            return None
        del self._seen[key]
        block = _new_block(max(1, array.nbytes))
        if block is None:
            return None
        np.copyto(np.ndarray(array.shape, array.dtype, buffer=block.buf), array)
        self._constants[key] = (array, block)  # holding the array keeps its id from being reused
        return block

    def close(self) -> None:
        with self._lock:
            for block in [block for _, block in self._constants.values()] + self._free:
                _remove(block)
            self._constants.clear()
            self._free.clear()
            self._closed = True


def _remove(block: shared_memory.SharedMemory) -> None:
    block.close()
    block.unlink()


def _new_block(size: int) -> shared_memory.SharedMemory | None:
    """A new block of `size` bytes, or None where shared memory has no room for it with as much to spare (on
    Linux: the free space of its tmpfs; elsewhere it is backed by memory or the page file) or cannot be made."""
    try:
        stats = os.statvfs(SHARED_MEMORY_DIR)
        if stats.f_bavail * stats.f_frsize < 2 * size:
            return None
    except (OSError, AttributeError):  # not Linux (no statvfs, or no such folder)
        pass
    try:
        return shared_memory.SharedMemory(create=True, size=size)
    except OSError:
        return None


#: A writer process's shared arrays, by block name (mapped for the process's life).
_attached_constants: dict[str, tuple[shared_memory.SharedMemory, np.ndarray]] = {}


def _write_packed(payload: bytes, places: list[tuple], block_name: str | None, folder: Path, overwrite: bool,
                  started: float | None, threads: int) -> Path:
    """`write_head_folder` of a head `_Transport.pack`ed in the GPU's process."""
    block = _attach(block_name) if block_name else None
    copied: dict[int, np.ndarray] = {}
    try:
        class Unpickler(pickle.Unpickler):
            def persistent_load(self, pid):
                if pid[0] == "constant":
                    return _attached_constant(*pid[1:])
                array = copied.get(pid[1])
                if array is None:
                    offset, shape, dtype = places[pid[1]]
                    array = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset).copy()
                    array.setflags(write=False)
                    copied[pid[1]] = array
                return array

        head = Unpickler(io.BytesIO(payload)).load()
    finally:
        if block is not None:
            block.close()
    return write_head_folder(head, folder, overwrite, started, threads)


def _attached_constant(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    kept = _attached_constants.get(name)
    if kept is None:
        block = _attach(name)
        array = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)
        array.setflags(write=False)
        kept = _attached_constants[name] = (block, array)
    return kept[1]


def _attach(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):  # the creating process unlinks it: no tracking here
        return shared_memory.SharedMemory(name=name, track=False)
    return shared_memory.SharedMemory(name=name)

"""The job store: the queue, each job's state, and its folder on disk.

One folder per job under the jobs folder, named by the job's random id:

    <jobs_dir>/<id>/job.json     the job's record, replaced atomically at every change of state
    <jobs_dir>/<id>/upload/      the uploaded photo, deleted when the job ends
    <jobs_dir>/<id>/output/      what the pipeline wrote (the files of docs/API.md)

Records survive a restart; jobs that were queued or running when the service stopped are marked
failed on the next start (their upload is gone with the process's queue), and folders without a
record (a submission cut short) are removed. Finished jobs expire `keep_hours` after they finished.
Only folders whose names match the job-id pattern are ever read or deleted, so a jobs folder pointed
at the wrong place loses nothing else. A submission that finds the disk full leaves nothing behind.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uvidm_backend.pipeline.output_folder import DiskFull, is_disk_full, write_bytes

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# The only names GET /v1/jobs/{id}/files/{name} serves (docs/API.md, "Output folder").
OUTPUT_FILES = ("head.glb", "head.obj", "head.mtl", "albedo.png", "albedo_model.png", "albedo_model_matched.png",
                "preview.png", "result.json")
# With `head` "full" or "both" (head "full" writes no head.glb / head.obj / head.mtl).
FULL_HEAD_OUTPUT_FILES = ("head_full.glb", "head_full.obj", "head_full.mtl", "head_full_skin.png",
                          "head_full_sclera_L.png", "head_full_sclera_R.png", "head_full_iris_L.png",
                          "head_full_iris_R.png")
SERVED_FILES = OUTPUT_FILES + FULL_HEAD_OUTPUT_FILES
STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
RECORD = "job.json"
UPLOAD = "upload"
OUTPUT = "output"
RECORD_VERSION = 1


def valid_job_id(job_id: str) -> bool:
    return JOB_ID.fullmatch(job_id) is not None


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def safe_file_name(name: str | None, default: str = "photo") -> str:
    """A client's file name reduced to [A-Za-z0-9._-] (no folders, no leading dot), for display and the upload."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", (name or "").replace("\\", "/").rsplit("/", 1)[-1])[:100].lstrip(".")
    return base or default


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers see the old or the new record, never a part (output_folder.write_bytes: temporary name, rename)."""
    write_bytes(json.dumps(data, indent=1).encode("utf-8"), path)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        log.warning("could not remove %s: %s", path, error)


class QueueFull(Exception):
    def __init__(self, capacity: int, retry_after: int):
        self.capacity = capacity
        self.retry_after = retry_after
        super().__init__(f"the queue is full ({capacity} jobs waiting); try again in about {retry_after} s")


class Reservation:
    """A place in the queue held for one submission while its photo is checked: `JobStore.create` uses it,
    `release` gives it back (both at most once; release after create does nothing)."""

    def __init__(self, store: JobStore):
        self._store = store
        self.held = True

    def release(self) -> None:
        self._store._release(self)


@dataclass
class Job:
    id: str
    photo_name: str
    options: dict[str, Any]
    created: float
    state: str = "queued"
    stage: str | None = None
    progress: float = 0.0
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    files: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    version: int = 0  # bumped at every change; event streams compare it (not persisted)

    def record(self) -> dict[str, Any]:
        return {"record_version": RECORD_VERSION, "id": self.id, "photo_name": self.photo_name,
                "options": self.options, "created": self.created, "state": self.state, "stage": self.stage,
                "progress": self.progress, "error": self.error, "started": self.started,
                "finished": self.finished, "files": self.files}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        job = cls(id=str(data["id"]), photo_name=str(data.get("photo_name") or "photo"),
                  options=dict(data.get("options") or {}), created=float(data["created"]),
                  state=str(data["state"]), stage=data.get("stage"), progress=float(data.get("progress") or 0.0),
                  error=data.get("error"), started=data.get("started"), finished=data.get("finished"),
                  files=[name for name in data.get("files") or [] if name in SERVED_FILES])
        if job.state not in STATES:
            raise ValueError(f"unknown state {job.state!r}")
        return job

    def public(self, queue_position: int | None) -> dict[str, Any]:
        """The job as the API shows it (docs/API.md)."""
        return {"id": self.id, "state": self.state, "stage": self.stage, "progress": round(self.progress, 4),
                "queue_position": queue_position, "error": self.error, "created": iso(self.created),
                "started": iso(self.started), "finished": iso(self.finished), "photo": self.photo_name,
                "options": self.options, "files": list(self.files), "cancel_requested": self.cancel_requested}


class JobStore:
    """Thread-safe: the HTTP handlers, the worker thread and the cleaner share one store."""

    def __init__(self, root: Path, capacity: int, keep_hours: float = 24.0):
        self.root = Path(root)
        self.capacity = capacity
        self.keep_seconds = keep_hours * 3600.0
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._reserved = 0  # submissions between the capacity check and the queue
        self._condition = threading.Condition()  # guards the jobs and the queue; never held for disk writes
        self._disk = threading.Lock()  # orders record writes and folder deletions
        self._written: dict[str, float] = {}  # job id → version of the record on disk (inf: folder deleted)
        self._durations: collections.deque[float] = collections.deque(maxlen=20)

    # -- paths (ids are validated before they get here) --------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return self.root / job_id

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUTPUT

    def upload_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / UPLOAD

    def output_file(self, job_id: str, name: str) -> Path | None:
        """The path of a finished job's output file, or None: only listed names of existing jobs."""
        if not valid_job_id(job_id) or name not in SERVED_FILES:
            return None
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None or job.state != "done" or name not in job.files:
                return None
        path = self.output_dir(job_id) / name
        return path if path.is_file() else None

    # -- start-up -----------------------------------------------------------------------------------
    def recover(self) -> int:
        """Loads the records on disk; jobs the last process left queued or running become failed."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        interrupted, orphans = 0, 0
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not valid_job_id(folder.name) or folder.name in self._jobs:
                continue
            try:
                job = Job.from_record(json.loads((folder / RECORD).read_text(encoding="utf-8")))
                if job.id != folder.name:
                    raise ValueError(f"record names job {job.id!r}")
            except FileNotFoundError:
                # A submission cut short before its record was written (a crash, a full disk): it holds
                # nothing but the user's photo, which no job will ever read.
                _remove(folder)
                orphans += 1
                continue
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("skipping job folder %s: unreadable record (%s)", folder, error)
                continue
            if job.state not in FINISHED:
                was = job.state
                job.state, job.finished, job.stage = "failed", now, None
                job.error = (f"the service stopped before this job finished (it was {was}); "
                             "submit the photo again")
                job.files = []
                interrupted += 1
                try:
                    write_json_atomic(folder / RECORD, job.record())
                except OSError as error:  # a full disk: the record says 'running' until the next start
                    log.error("could not mark job %s failed on disk: %s", job.id, error)
                for entry in folder.iterdir():  # the upload, half-written output folders, stray temporary files
                    if entry.name != RECORD:
                        _remove(entry)
            elif job.state == "done":
                job.files = [name for name in job.files if (folder / OUTPUT / name).is_file()]
            shutil.rmtree(folder / UPLOAD, ignore_errors=True)
            self._jobs[job.id] = job
        if interrupted:
            log.warning("%d job(s) were interrupted by the last shutdown and are marked failed", interrupted)
        if orphans:
            log.warning("removed %d orphaned job folder(s) without a record (submissions cut short) from %s",
                        orphans, self.root)
        return interrupted

    # -- submission and queue -----------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean duration of recent jobs."""
        with self._condition:
            mean = sum(self._durations) / len(self._durations) if self._durations else 10.0
        return int(min(3600, max(1, math.ceil(mean))))

    def reserve(self) -> Reservation:
        """Holds a queue place for a submission before its photo is read; raises QueueFull."""
        with self._condition:
            if len(self._queue) + self._reserved < self.capacity:
                self._reserved += 1
                return Reservation(self)
        raise QueueFull(self.capacity, self.retry_after())

    def _release(self, reservation: Reservation) -> None:
        with self._condition:
            if reservation.held:
                reservation.held = False
                self._reserved -= 1

    def create(self, photo: bytes, photo_name: str, extension: str, options: dict[str, Any],
               reservation: Reservation | None = None) -> dict[str, Any]:
        """Stores the upload and queues the job in the reserved place (reserved now when none is given).

        Raises QueueFull, or DiskFull when the upload or the record does not fit: the folder is removed.
        """
        reservation = reservation or self.reserve()
        if not reservation.held:
            raise ValueError("this queue place was given back or used already")
        job_id = secrets.token_urlsafe(16)
        folder = self.job_dir(job_id)
        try:
            (folder / UPLOAD).mkdir(parents=True)
            name = safe_file_name(photo_name)
            stem = name.rsplit(".", 1)[0] if "." in name else name
            write_bytes(photo, folder / UPLOAD / f"{stem or 'photo'}.{extension}")
            job = Job(id=job_id, photo_name=name, options=options, created=time.time())
            write_json_atomic(folder / RECORD, job.record())
        except BaseException as error:
            reservation.release()
            if os.path.lexists(folder):
                _remove(folder)  # nothing half-stored stays: no record, no photo without a job
            if is_disk_full(error) and not isinstance(error, DiskFull):
                raise DiskFull(self.root) from error
            raise
        with self._condition:
            reservation.held = False
            self._reserved -= 1
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._condition.notify_all()
            return job.public(len(self._queue) - 1)

    def queue_length(self) -> int:
        with self._condition:
            return len(self._queue)

    def take(self, timeout: float) -> tuple[str, Path, dict[str, Any]] | None:
        """Blocks up to `timeout` for the next queued job, marks it running: (id, photo path, options)."""
        with self._condition:
            if not self._queue:
                self._condition.wait(timeout)
            if not self._queue:
                return None
            job = self._jobs[self._queue.popleft()]
            pending = self._start(job)
        self._write(pending)
        return self._taken(job)

    def take_matching(self, matches: Callable[[dict[str, Any]], bool], limit: int
                      ) -> list[tuple[str, Path, dict[str, Any]]]:
        """Takes (without waiting) up to `limit` queued jobs whose options `matches`, in queue order, and marks
        them running: the jobs that can join a batch."""
        with self._condition:
            chosen = [job_id for job_id in self._queue if matches(dict(self._jobs[job_id].options))][:max(0, limit)]
            pending = []
            for job_id in chosen:
                self._queue.remove(job_id)
                pending.append(self._start(self._jobs[job_id]))
        for record in pending:
            self._write(record)
        return [self._taken(self._jobs[job_id]) for job_id in chosen if job_id in self._jobs]

    def _start(self, job: Job) -> tuple[str, int, dict[str, Any]]:
        job.state, job.started, job.stage, job.progress = "running", time.time(), "starting", 0.0
        job.version += 1
        self._condition.notify_all()
        return self._pending(job)

    def _taken(self, job: Job) -> tuple[str, Path, dict[str, Any]]:
        uploads = sorted(self.upload_dir(job.id).glob("*"))
        return job.id, (uploads[0] if uploads else self.upload_dir(job.id) / "missing"), dict(job.options)

    def progress(self, job_id: str, stage: str, fraction: float) -> bool:
        """Records progress (memory only); returns True when the job should stop."""
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return True
            fraction = min(1.0, max(0.0, float(fraction)))
            if stage != job.stage or abs(fraction - job.progress) >= 1e-4:
                job.stage, job.progress = stage, max(job.progress, fraction)
                job.version += 1
                self._condition.notify_all()
            return job.cancel_requested

    def finish(self, job_id: str, state: str, error: str | None = None) -> None:
        if state not in FINISHED:
            raise ValueError(f"not a final state: {state}")
        files = []
        if state == "done":
            output = self.output_dir(job_id)
            files = [name for name in SERVED_FILES if (output / name).is_file()]
        else:
            shutil.rmtree(self.output_dir(job_id), ignore_errors=True)
        shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return  # deleted while it ran
            job.state, job.error, job.files, job.finished = state, error, files, time.time()
            if state == "done":
                job.stage, job.progress = "done", 1.0
            if job.started is not None:
                self._durations.append(job.finished - job.started)
            job.version += 1
            pending = self._pending(job)
            self._condition.notify_all()
        self._write(pending)

    # -- reading ------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        return self.snapshot(job_id)[1]

    def snapshot(self, job_id: str) -> tuple[int, dict[str, Any] | None]:
        """(version, public job) under one lock; (-1, None) for unknown ids."""
        if not valid_job_id(job_id):
            return -1, None
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return -1, None
            return job.version, job.public(self._position(job))

    def _position(self, job: Job) -> int | None:
        if job.state != "queued":
            return None
        try:
            return self._queue.index(job.id)
        except ValueError:
            return None

    # -- cancel, delete, expire ---------------------------------------------------------------------
    def cancel(self, job_id: str) -> tuple[str, dict[str, Any] | None]:
        """('cancelled', job) for a queued job (taken off the queue), ('cancelling', job) for a running one
        (the worker stops it at its next progress report), ('finished', job) for others, ('unknown', None)."""
        if not valid_job_id(job_id):
            return "unknown", None
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return "unknown", None
            if job.state == "queued":
                self._queue.remove(job_id)
                job.state, job.finished, job.error = "cancelled", time.time(), None
                job.version += 1
                pending = self._pending(job)
                self._condition.notify_all()
                outcome = "cancelled"
            elif job.state == "running":
                job.cancel_requested = True
                job.version += 1
                self._condition.notify_all()
                outcome = "cancelling"
            else:
                outcome = "finished"
            snapshot = job.public(self._position(job))
        if outcome == "cancelled":
            self._write(pending)
            shutil.rmtree(self.upload_dir(job_id), ignore_errors=True)
        return outcome, snapshot

    def cancel_running(self) -> None:
        """Asks the running job (if any) to stop: used at shutdown."""
        with self._condition:
            for job in self._jobs.values():
                if job.state == "running":
                    job.cancel_requested = True
                    job.version += 1
            self._condition.notify_all()

    def delete(self, job_id: str) -> bool:
        """Deletes a finished job and its folder; False for unknown or unfinished jobs."""
        if not valid_job_id(job_id):
            return False
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None or job.state not in FINISHED:
                return False
            del self._jobs[job_id]
            self._condition.notify_all()
        self._remove_folder(job_id)
        return True

    def expire(self, now: float | None = None) -> list[str]:
        """Deletes finished jobs older than keep_hours; returns their ids."""
        now = time.time() if now is None else now
        with self._condition:
            old = [job.id for job in self._jobs.values()
                   if job.state in FINISHED and job.finished is not None and now - job.finished >= self.keep_seconds]
            for job_id in old:
                del self._jobs[job_id]
            if old:
                self._condition.notify_all()
        for job_id in old:
            self._remove_folder(job_id)
        if old:
            log.info("expired %d finished job(s)", len(old))
        return old

    # -- disk: record writes happen outside the main lock (fsync may take a while), in version order ---------
    @staticmethod
    def _pending(job: Job) -> tuple[str, int, dict[str, Any]]:
        """What to write for a job, taken under the main lock."""
        return job.id, job.version, job.record()

    def _write(self, pending: tuple[str, int, dict[str, Any]]) -> None:
        job_id, version, record = pending
        with self._disk:
            if self._written.get(job_id, -1) >= version:
                return  # a newer record is on disk already, or the folder was deleted
            try:
                write_json_atomic(self.job_dir(job_id) / RECORD, record)
            except OSError as error:  # a full disk must not kill the worker; the job goes on in memory
                log.error("could not write the record of job %s: %s", job_id, error)
                return
            self._written[job_id] = version

    def _remove_folder(self, job_id: str) -> None:
        with self._disk:
            self._written[job_id] = math.inf
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

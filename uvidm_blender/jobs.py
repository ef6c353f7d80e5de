"""One Generate, start to finish, off Blender's main thread: health, upload, poll, download.

`GenerateJob.run()` does the network work and never raises; it reports `JobEvent`s on a queue
that the modal operator drains on its timer, so the UI never waits on the network. In
background mode the operator calls `run()` directly (same code, no thread). No bpy here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .client import (
    FINAL_STATES,
    OUTPUT_FILES,
    BackendError,
    BackendUnreachable,
    Client,
    JobOptions,
    describe_job,
    in_blender_words,
)
from .results import RESULT_JSON, result_name, unique_folder

log = logging.getLogger(__name__)

# Where each phase sits on the progress bar (the backend's own progress fills the middle).
_UPLOADED, _BACKEND_DONE = 0.05, 0.95


@dataclass(frozen=True)
class JobEvent:
    """A snapshot of the job for the UI; `final` events end it (state done/failed/cancelled)."""

    state: str  # "waiting", "uploading", "queued", "running", "downloading", "done", "failed", "cancelled"
    message: str
    progress: float
    result_dir: Path | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class JobCancelled(Exception):
    pass


class GenerateJob:
    """Generate one head: `job.start()` (thread) or `job.run()` (here), `job.cancel()` from anywhere.

    `wait_for_backend`: seconds to wait for a backend that is starting (not answering yet, or
    loading its models); 0 reports an unreachable backend at once. `backend_died`: for a backend
    the add-on started, says why it is gone (None while it runs), so a crash is reported at once.
    """

    def __init__(self, client: Client, photo: str | os.PathLike[str], options: JobOptions,
                 results_root: str | os.PathLike[str], *, wait_for_backend: float = 0.0,
                 backend_died: Callable[[], str | None] | None = None,
                 landmarks_file: str | os.PathLike[str] | None = None,
                 poll_interval: float = 0.5, sleep: Callable[[float], None] | None = None):
        self.client = client
        self.photo = Path(photo)
        self.options = options
        self.results_root = Path(results_root)
        self.wait_for_backend = wait_for_backend
        self.backend_died = backend_died
        self.landmarks_file = Path(landmarks_file) if landmarks_file else None
        self.poll_interval = poll_interval
        self.events: queue.Queue[JobEvent] = queue.Queue()
        self.job_id: str | None = None
        self.health: dict | None = None  # the backend's last health answer (device, models)
        self.picked_face: int | None = None  # the face taken from the landmarks file (its index in the photo)
        self.last: JobEvent = JobEvent("waiting", "Starting", 0.0)
        self._cancelled = threading.Event()
        self._sleep = sleep
        self._thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="uvidm-generate", daemon=True)
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> JobEvent:
        """The newest event (the UI only needs the latest); `last` when nothing new arrived."""
        while True:
            try:
                self.last = self.events.get_nowait()
            except queue.Empty:
                return self.last

    # -- work ----------------------------------------------------------------------------------
    def _emit(self, state: str, message: str, progress: float, result_dir: Path | None = None) -> None:
        event = JobEvent(state, message, max(0.0, min(1.0, progress)), result_dir)
        self.events.put(event)
        log.debug("job %s: %s", self.job_id, event)

    def _wait(self, seconds: float) -> None:
        """Sleep, but wake up to a cancel at once (unless a test injected its own sleep)."""
        if self._sleep is not None:
            self._sleep(seconds)
            if self._cancelled.is_set():
                raise JobCancelled
        elif self._cancelled.wait(seconds):
            raise JobCancelled

    def _check_cancel(self) -> None:
        if self._cancelled.is_set():
            raise JobCancelled

    def run(self) -> JobEvent:
        """Do it all; returns (and emits) the final event."""
        try:
            result_dir = self._run()
            event = JobEvent("done", f"Done: {result_dir.name}", 1.0, result_dir)
        except JobCancelled:
            self._cancel_remote()
            event = JobEvent("cancelled", "Cancelled", self.last.progress)
        except BackendError as error:
            event = JobEvent("failed", error.message, 0.0)
        except Exception as error:  # a bug must still end the job with a message, not a silent thread
            log.exception("generate failed")
            event = JobEvent("failed", f"Unexpected error: {error}", 0.0)
        self.events.put(event)
        return event

    def _cancel_remote(self) -> None:
        if self.job_id is None:
            return
        try:
            self.client.cancel(self.job_id)
        except BackendError as error:
            log.warning("could not cancel job %s: %s", self.job_id, error.message)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.wait_for_backend
        while True:
            self._check_cancel()
            try:
                health = self.health = self.client.health(timeout=5.0)
            except BackendUnreachable:
                if self.backend_died is not None and (reason := self.backend_died()):
                    raise BackendError(reason) from None
                if time.monotonic() >= deadline:
                    raise
                self._emit("waiting", "Waiting for the backend to start", 0.0)
                self._wait(1.0)
                continue
            state = (health.get("models") or {}).get("state")
            if state == "failed":
                error = in_blender_words((health.get("models") or {}).get("error") or "no details")
                raise BackendError(f"The backend could not load its models ({error}). Check the model folder in "
                                   "the add-on preferences, then restart the backend.")
            if state != "loading" or time.monotonic() >= deadline:
                return  # a loading backend still queues jobs: submit and let the job wait there
            self._emit("waiting", "The backend is loading its models", 0.0)
            self._wait(1.0)

    def _with_file_landmarks(self) -> JobOptions:
        """The chosen face's five points from the landmarks file (the backend reads every layout it knows)."""
        self._emit("uploading", f"Reading {self.landmarks_file.name}", 0.0)
        faces = self.client.faces(self.photo, self.landmarks_file)["faces"]
        chosen = pick_face(faces, self.options.face_index)
        if chosen is None:
            raise BackendError(f"The landmarks file {self.landmarks_file.name} has {len(faces)} face(s) for this "
                               f"photo; face {self.options.face_index + 1} is not among them. Pick another face.")
        self.picked_face = chosen["index"]
        # The points name the face: the backend takes no face_index beside them.
        return dataclasses.replace(self.options, face_index=None,
                                   landmarks=tuple((float(x), float(y)) for x, y in chosen["points"]))

    def _submit(self) -> dict:
        while True:
            self._check_cancel()
            self._emit("uploading", f"Uploading {self.photo.name}", 0.01)
            try:
                return self.client.submit(self.photo, self.options)
            except BackendError as error:
                if error.status != 429:
                    raise
                self._emit("waiting", error.message, 0.0)
                self._wait(error.retry_after or 5.0)

    def _run(self) -> Path:
        if not self.photo.is_file():
            raise BackendError(f"The photo {self.photo} does not exist; choose another one.")
        self._emit("waiting", "Connecting to the backend", 0.0)
        self._wait_until_ready()
        if self.landmarks_file is not None:
            self.options = self._with_file_landmarks()
        job = self._submit()
        self.job_id = job["id"]
        failures = 0
        while True:
            self._check_cancel()
            state = job.get("state")
            progress = _UPLOADED + (_BACKEND_DONE - _UPLOADED) * float(job.get("progress") or 0.0)
            if state == "done":
                break
            if state == "failed":
                error = in_blender_words(job.get("error") or "no details")
                raise BackendError(f"The backend could not make this head: {error}")
            if state == "cancelled":
                raise JobCancelled
            self._emit(state or "running", describe_job(job, progress), progress)
            self._wait(self.poll_interval)
            try:
                job = self.client.job(self.job_id)
                failures = 0
            except BackendUnreachable:
                failures += 1  # one dropped poll is not a failed job
                if failures >= 5:
                    raise
        self._emit("downloading", "Downloading the head", _BACKEND_DONE)
        result_dir = self._download(job)
        try:  # the backend keeps the photo and results for hours otherwise; we have our copy
            self.client.cancel(self.job_id)
        except BackendError as error:
            log.info("could not delete job %s on the backend: %s", self.job_id, error.message)
        return result_dir

    def _download(self, job: dict) -> Path:
        names = [name for name in (job.get("files") or OUTPUT_FILES) if name in OUTPUT_FILES]
        self.results_root.mkdir(parents=True, exist_ok=True)
        partial = self.results_root / f".{self.photo.stem}.partial-{secrets.token_hex(4)}"
        try:
            self.client.download(self.job_id, names, partial)
            self._check_cancel()
            if self.picked_face is not None:
                _record_face(partial / RESULT_JSON, self.picked_face)
            face_index = _face_index(partial / RESULT_JSON, self.options.face_index)
            target = unique_folder(self.results_root, result_name(self.photo.stem, face_index))
            os.rename(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target


def _record_face(result_json: Path, index: int) -> None:
    """Write into our copy of result.json which face of the photo the landmarks were (the backend only saw
    five points), so the result's name and the Results list can say it."""
    try:
        meta = json.loads(result_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(meta.get("face"), dict) and meta["face"].get("index") is None:
        meta["face"]["index"] = index
        partial = result_json.with_suffix(".partial")
        partial.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(partial, result_json)


def _face_index(result_json: Path, asked: int | None) -> int | None:
    """The face the backend made (result.json's face.index: the detected face's number), else the one asked for."""
    try:
        index = json.loads(result_json.read_text(encoding="utf-8"))["face"]["index"]
    except (OSError, ValueError, KeyError, TypeError):
        return asked
    return index if isinstance(index, int) else asked


def pick_face(faces: list[dict], face_index: int | None) -> dict | None:
    """The face a job takes from POST /v1/faces' list: `face_index`, or the largest for None."""
    if face_index is None:
        return next((face for face in faces if face.get("largest")), faces[0] if faces else None)
    return next((face for face in faces if face.get("index") == face_index), None)


def wait_for_backend(client: Client, seconds: float, died: Callable[[], str | None] | None = None) -> None:
    """Return once the backend answers and has loaded its models (or `seconds` passed); blocking."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if (client.health(timeout=5.0).get("models") or {}).get("state") != "loading":
                return
        except BackendUnreachable:
            if died is not None and (reason := died()):
                raise BackendError(reason) from None
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            return
        time.sleep(0.5)

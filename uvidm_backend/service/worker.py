"""The one worker thread that runs jobs, the loader that keeps the models warm, and the cleaner.

One worker, because one pipeline owns the GPU (or all CPU cores): jobs run one batch after another and
the queue in front of them is bounded (jobs.JobStore). Jobs waiting in the queue with compatible options
(`GenerateOptions.batch_key`: the same steps, sampler, texture, ...) run together, up to `max_batch`, each
with its own progress, cancel, failure and files. A job's exception fails that job, never the worker; a
cancel request is seen at the pipeline's next progress report (between diffusion steps).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from uvidm_backend.pipeline.errors import Cancelled, UVIDMError
from uvidm_backend.pipeline.options import GenerateOptions
from uvidm_backend.pipeline.output_folder import is_disk_full
from uvidm_backend.pipeline.progress import STAGES
from uvidm_backend.service.jobs import JobStore
from uvidm_backend.service.wording import in_http_terms

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the service needs of the pipeline (uvidm_backend.pipeline.Pipeline)."""

    def generate_to_folder(self, photo: bytes | Path, out_dir: Path, options: GenerateOptions,
                           progress: Callable[[str, float], None] | None = None) -> Path: ...

    def describe(self) -> dict[str, Any]: ...


class BatchRunner(Runner, Protocol):
    """A runner that also takes batches (the pipeline): `generate_batch(requests)` -> heads or exceptions."""

    def generate_batch(self, requests: Sequence[Any], run_batch: int | None = None) -> list[Any]: ...


class ModelHolder:
    """Holds the runner: given ready, or loaded once in a background thread so the service answers at once.

    Health reports `state` ("loading" / "ready" / "failed") and the loading error.
    """

    def __init__(self, runner: Runner | None = None, load: Callable[[], Runner] | None = None,
                 missing: Callable[[], list[str]] | None = None):
        """`missing` names the model files that are not there yet: until it names none, the holder is
        "missing" and `start` waits (the service's download calls `start` again when it is done)."""
        if (runner is None) == (load is None):
            raise ValueError("give either a runner or a function that loads one")
        self._load = load
        self._missing = missing or (lambda: [])
        self._runner = runner
        self._error: str | None = None
        self._description: dict[str, Any] = {}
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        if runner is not None:
            self._describe()
            self._ready.set()

    @property
    def state(self) -> str:
        if self._thread is None and self._runner is None and self.missing():
            return "missing"
        if not self._ready.is_set():
            return "loading"
        return "failed" if self._runner is None else "ready"

    @property
    def error(self) -> str | None:
        return self._error

    @property
    def runner(self) -> Runner | None:
        return self._runner

    def missing(self) -> list[str]:
        return [] if self._runner is not None else self._missing()

    def start(self) -> None:
        if self._load is None or self._thread is not None or self.missing():
            return
        self._thread = threading.Thread(target=self._load_models, name="uvidm-load", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def status(self) -> dict[str, Any]:
        if self._runner is not None and self._description.get("compiling"):
            self._describe()  # a background compilation changes the fast mode; follow it until it ends
        models = self._description.get("models", [])
        return {"state": self.state, "error": self._error, "missing": self.missing(),
                "loaded": [str(model) for model in models] if isinstance(models, list | tuple) else [],
                "device": self._description.get("device"), "dtype": self._description.get("dtype"),
                "fast": self._description.get("fast"), "compiling": bool(self._description.get("compiling"))}

    def _load_models(self) -> None:
        try:
            self._runner = self._load()
            self._describe()
            log.info("models ready: %s", self._description)
        except Exception as error:  # reported by health and by every job, the service keeps answering
            log.exception("loading the models failed")
            self._error = f"{error}" if isinstance(error, UVIDMError) else f"{type(error).__name__}: {error}"
        finally:
            self._ready.set()

    def _describe(self) -> None:
        try:
            self._description = dict(self._runner.describe())
        except Exception as error:
            log.warning("describe() failed: %s", error)
            self._description = {}


#: Jobs run together at most (a runner without `generate_batch` runs them one by one).
MAX_BATCH = 8


class Worker:
    """Takes jobs off the store's queue, with the waiting jobs that can share their batch, and runs them."""

    def __init__(self, store: JobStore, models: ModelHolder, poll_s: float = 0.5, max_batch: int = MAX_BATCH):
        self.store = store
        self.models = models
        self.poll_s = poll_s
        self.max_batch = max(1, max_batch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="uvidm-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops taking jobs, asks the running one to stop, waits for the thread."""
        self._stop.set()
        self.store.cancel_running()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the worker did not stop within %.0f s (a stage without progress reports?)", timeout)

    def _loop(self) -> None:
        # Jobs wait in the queue (cancellable there) while the models load.
        while not self._stop.is_set() and not self.models.wait(self.poll_s):
            pass
        while not self._stop.is_set():
            try:
                taken = self.store.take(self.poll_s)
            except Exception:  # the worker must outlive any one job's bookkeeping
                log.exception("taking the next job failed")
                self._stop.wait(self.poll_s)
                continue
            if taken is None:
                continue
            runner = self.models.runner
            if runner is None or not hasattr(runner, "generate_batch") or self.max_batch == 1:
                self.run_job(*taken)
                continue
            key = _batch_key(taken[2])
            more = [] if key is None else self.store.take_matching(lambda options, key=key: _batch_key(options) == key,
                                                                   self.max_batch - 1)
            if more:
                self.run_batch(runner, [taken, *more])
            else:
                self.run_job(*taken)

    def _progress(self, job_id: str) -> Callable[[str, float], None]:
        def progress(stage: str, fraction: float) -> None:
            if self.store.progress(job_id, stage, fraction) or self._stop.is_set():
                raise Cancelled("cancelled")

        return progress

    def run_batch(self, runner: BatchRunner, jobs: list[tuple[str, Path, dict[str, Any]]]) -> None:
        """Jobs with compatible options through the networks together; each ends on its own."""
        from uvidm_backend.pipeline.files import write_head_folder
        from uvidm_backend.pipeline.pipeline import Request

        started = time.perf_counter()
        progresses = [self._progress(job_id) for job_id, _, _ in jobs]
        log.info("running %d jobs as one batch", len(jobs))
        try:
            results = runner.generate_batch([Request(photo, GenerateOptions(**_options(options)), progress)
                                             for (_, photo, options), progress in zip(jobs, progresses, strict=True)])
        except Exception as error:  # noqa: BLE001 - a failed batch fails each of its jobs
            results = [error] * len(jobs)
        for (job_id, _, _), progress, result in zip(jobs, progresses, results, strict=True):
            def write(progress=progress, result=result, job_id=job_id) -> None:
                if isinstance(result, BaseException):
                    raise result
                progress("files", 1.0 - STAGES["files"])
                write_head_folder(result, self.store.output_dir(job_id), started=started)
                progress("files", 1.0)

            self._finish(job_id, write)

    def run_job(self, job_id: str, photo: Path, options: dict[str, Any]) -> None:
        progress = self._progress(job_id)

        def run() -> None:
            runner = self.models.runner
            if runner is None:
                raise UVIDMError(f"the models could not be loaded: {self.models.error}. The service must be "
                                 "restarted once its model files are fixed")
            progress("starting", 0.0)
            runner.generate_to_folder(photo, self.store.output_dir(job_id), GenerateOptions(**_options(options)),
                                      progress=progress)

        self._finish(job_id, run)

    def _finish(self, job_id: str, run: Callable[[], None]) -> None:
        """Runs `run` and records how the job ended (done, cancelled, or failed with the reason)."""
        try:
            run()
        except Cancelled:
            if self._stop.is_set():
                self.store.finish(job_id, "failed", "the service stopped while this job ran; submit the photo again")
            else:
                self.store.finish(job_id, "cancelled")
            log.info("job %s cancelled", job_id)
        except Exception as error:
            if is_disk_full(error):
                log.error("job %s failed: disk full (%s)", job_id, error)
                message = "the service's disk is full, so the result could not be written: try again later"
            elif isinstance(error, UVIDMError):
                log.info("job %s failed: %s", job_id, error)
                message = in_http_terms(str(error))
            else:  # any bug or resource error fails this job only; the worker goes on
                log.exception("job %s failed", job_id)
                message = f"internal error ({type(error).__name__}): {error}"
            self.store.finish(job_id, "failed", message)
        else:
            self.store.finish(job_id, "done")
            log.info("job %s done", job_id)


def _batch_key(options: dict[str, Any]) -> tuple | None:
    """The stored options' `GenerateOptions.batch_key`, or None for options that are not valid any more."""
    try:
        return GenerateOptions(**_options(options)).batch_key()
    except (UVIDMError, TypeError):
        return None


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """The stored options (JSON) back into GenerateOptions' arguments."""
    options = dict(options)
    if options.get("landmarks") is not None:
        options["landmarks"] = tuple(tuple(point) for point in options["landmarks"])
    return options


class Cleaner:
    """Deletes expired jobs every `interval_s` seconds (and once at start)."""

    def __init__(self, store: JobStore, interval_s: float):
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="uvidm-cleaner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _loop(self) -> None:
        while True:
            try:
                self.store.expire()
            except Exception:  # a permission problem on one folder must not end the cleaning
                log.exception("cleaning expired jobs failed")
            if self._stop.wait(self.interval_s):
                return

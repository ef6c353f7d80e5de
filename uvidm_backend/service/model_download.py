"""The model files, downloaded by the service itself (POST /v1/models/download): one download at a time,
in a background thread, its progress for health and the event stream, the models loaded when it ends.

The same `model_files.install` as `uvidm weights download`: files verified before they are placed, a
failed or cancelled download leaves only finished, verified files (and resumable `.partial` files).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from uvidm_backend.model_files.install import DownloadPlan, install, install_full_head, plan_hub
from uvidm_backend.model_files.licences import licence_text
from uvidm_backend.model_files.transfer import Progress
from uvidm_backend.pipeline.errors import Cancelled
from uvidm_backend.registry import HUB_REPOSITORY, ModelPaths

log = logging.getLogger(__name__)


class DownloadRunning(RuntimeError):
    """A download is already running (HTTP 409)."""


@dataclass(frozen=True)
class DownloadStatus:
    state: str  # "running", "done", "failed", "cancelled"
    file: str | None
    done_bytes: int
    total_bytes: int
    error: str | None
    version: int  # grows with every change: event streams send each version once


class ModelDownloads:
    """`on_installed` runs in the download thread once every required file is there (it loads the models)."""

    def __init__(self, paths: ModelPaths, on_installed: Callable[[], None], repository: str = HUB_REPOSITORY):
        self.paths = paths
        self.repository = repository
        self._on_installed = on_installed
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._status: DownloadStatus | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def plan(self, revision: str = "main", full_head: bool = False) -> dict[str, Any]:
        """What a download would fetch, with the licences to show first (lists the hub: call off the event loop)."""
        plan = plan_hub(self.paths, self.repository, revision)
        described = plan.as_dict()
        if full_head:  # GitHub lists no sizes up front: the ICT files are counted, not weighed
            described["files"].append({"name": "ICT FaceKit (FaceXModel/, about 160 files)", "size": None,
                                       "source": "github"})
        return {**described, "licences": licence_text(full_head)}

    def start(self, revision: str = "main", full_head: bool = False) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise DownloadRunning("a download of the model files is already running")
            self._cancel = threading.Event()
            self._set(DownloadStatus("running", None, 0, 0, None, self._next_version()))
            self._thread = threading.Thread(target=self._run, args=(revision, full_head), name="uvidm-download",
                                            daemon=True)
            self._thread.start()

    def cancel(self) -> bool:
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
        if running:
            self._cancel.set()
        return running

    @property
    def running(self) -> bool:
        return self._status is not None and self._status.state == "running"

    def status(self) -> dict[str, Any] | None:
        status = self._status
        return None if status is None else {key: value for key, value in asdict(status).items() if key != "version"}

    def wait_change(self, after_version: int, timeout: float) -> DownloadStatus | None:
        """The status once its version passes `after_version` (or the current one after `timeout`)."""
        with self._changed:
            self._changed.wait_for(lambda: self._status is not None and self._status.version > after_version,
                                   timeout)
            return self._status

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _next_version(self) -> int:
        return (self._status.version if self._status else 0) + 1

    def _set(self, status: DownloadStatus) -> None:  # with self._lock held
        self._status = status
        self._changed.notify_all()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            fields = {**asdict(self._status), **changes, "version": self._next_version()}
            self._set(DownloadStatus(**fields))

    def _run(self, revision: str, full_head: bool) -> None:
        try:
            plan: DownloadPlan = plan_hub(self.paths, self.repository, revision)
            self._update(total_bytes=plan.total_bytes)
            progress = Progress(plan.total_bytes, self._on_progress, cancel=self._cancel)
            report = install(plan, self.paths, progress)
            if full_head and not self._cancel.is_set():
                self._update(file="ICT FaceKit")
                install_full_head(self.paths, None, report)
        except Cancelled:
            self._update(state="cancelled", file=None, error="cancelled; finished files are kept, the rest "
                                                             "resumes with the next download")
            return
        except Exception as error:  # reported in health and the event stream, never raised into the server
            log.warning("model download failed: %s", error)
            self._update(state="failed", error=str(error))
            return
        missing = [file.name for file in self.paths.missing()]
        if report.failures or missing:
            reasons = "; ".join(reason if reason.startswith(name) else f"{name}: {reason}"
                                for name, reason in report.failures.items()) or f"still missing: {', '.join(missing)}"
            self._update(state="failed", file=None, error=reasons)
            return
        self._update(state="done", file=None, done_bytes=progress.done_bytes, total_bytes=progress.total_bytes)
        try:
            self._on_installed()
        except Exception:  # the holder reports its own loading errors
            log.exception("loading the models after the download failed")

    def _on_progress(self, progress: Progress) -> None:
        self._update(file=progress.file, done_bytes=progress.done_bytes, total_bytes=progress.total_bytes)

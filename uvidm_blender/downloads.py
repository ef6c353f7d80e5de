"""Download Model Files: the backend downloads, the add-on starts it, follows it and can cancel it.

`ModelDownload.run()` (a thread) sends POST /v1/models/download, then reads the progress from health
(`models.download`) until the download ends and the backend has loaded the new files. The UI reads
`progress`, `message`, `done`, `error`; `cancel()` sends DELETE. No bpy here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .client import BackendError, Client, describe_download

LOADED_STATES = ("ready", "failed")


class ModelDownload:
    def __init__(self, client: Client, revision: str = "main", poll_interval: float = 0.5,
                 on_health: Callable[[dict], None] | None = None, timeout: float = 6 * 3600.0,
                 full_head: bool = False):
        self.client = client
        self.revision = revision
        self.full_head = full_head
        self.poll_interval = poll_interval
        self.on_health = on_health
        self.timeout = timeout
        self.progress = 0.0
        self.message = "Starting the download"
        self.done = False
        self.error: str | None = None
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="uvidm-models", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self) -> None:
        self._cancelled.set()

    def run(self) -> bool:
        try:
            self.client.start_model_download(self.revision, full_head=self.full_head)
            return self._follow()
        except BackendError as error:
            self.error = error.message
            return False
        finally:
            self.done = True

    def _follow(self) -> bool:
        deadline = time.monotonic() + self.timeout
        cancel_sent, failures = False, 0
        while time.monotonic() < deadline:
            if self._cancelled.is_set() and not cancel_sent:
                self.client.cancel_model_download()
                cancel_sent = True
                self.message = "Cancelling the download"
            try:
                health = self.client.health(timeout=10.0)
                failures = 0
            except BackendError:
                failures += 1  # the backend may be busy for a moment; five misses in a row end it
                if failures >= 5:
                    raise
                time.sleep(self.poll_interval)
                continue
            if self.on_health is not None:
                self.on_health(health)
            models = health.get("models") or {}
            download = models.get("download") or {}
            total = int(download.get("total_bytes") or 0)
            if total:  # the total grows when a file of unknown size starts: the bar still never goes back
                self.progress = max(self.progress, min(1.0, int(download.get("done_bytes") or 0) / total))
            if download.get("state") == "running" or models.get("state") == "downloading":
                if not cancel_sent:
                    self.message = describe_download(download, self.progress)
            elif download.get("state") in ("failed", "cancelled"):
                self.error = describe_download(download)
                return False
            elif models.get("state") in LOADED_STATES:
                if models.get("state") == "failed":
                    self.error = f"The files are downloaded but do not load: {models.get('error') or 'no details'}"
                    return False
                self.progress, self.message = 1.0, "The model files are downloaded and loaded."
                return True
            else:
                self.message = "The backend is loading the new model files"
            time.sleep(self.poll_interval)
        self.error = "The download did not finish in time; see the backend log."
        return False

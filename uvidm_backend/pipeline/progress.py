"""One progress bar per photo of a batch: stage fractions, stage timings, and a photo's callback failing alone.

A photo's callback raising (a cancelled job raises `Cancelled` from it) fails that photo only: the batch
goes on for the others, that callback is not called again, and the photo's result is the exception.
When every photo of the batch has failed so, the batch stops (`BatchStopped`) at that report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

Progress = Callable[[str, float], None]

# Share of the whole job each stage stands for, in order (for one progress bar).
STAGES = {"photo": 0.02, "face": 0.04, "condition": 0.12, "diffusion": 0.6, "decode": 0.05, "texture": 0.08,
          "mesh": 0.02, "full_head": 0.0, "preview": 0.04, "files": 0.03}


class BatchStopped(Exception):
    """Every photo of the batch has failed: nothing is left to compute."""


class BatchProgress:
    """Turns (stage, fraction of the stage) into each photo's fraction of its job; times each stage.

    On CUDA each stage boundary waits for the GPU's current stream: kernels run asynchronously, and without
    the wait a stage's GPU time would be billed to whichever later stage first reads a result. (Only that
    stream: the finishing of one batch runs on a stream of its own beside the next batch's networks.)
    """

    def __init__(self, callbacks: Sequence[Progress | None], device: torch.device | None = None):
        self.callbacks = list(callbacks)
        self.failed: dict[int, BaseException] = {}
        self.timings: dict[str, float] = {}
        self._done = 0.0
        self._stage: str | None = None
        self._started = 0.0
        self._cuda_device = device if device is not None and device.type == "cuda" else None

    def fail(self, index: int, error: BaseException) -> None:
        """Marks photo `index` failed (its first error is kept); stops the batch once none is left."""
        self.failed.setdefault(index, error)
        if len(self.failed) == len(self.callbacks):
            raise BatchStopped

    def alive(self) -> list[int]:
        return [i for i in range(len(self.callbacks)) if i not in self.failed]

    def start(self, stage: str) -> None:
        self.finish()
        self._stage, self._started = stage, time.perf_counter()
        self.report(0.0)

    def report(self, fraction: float) -> None:
        if self._stage is None:
            return
        value = min(1.0, self._done + STAGES[self._stage] * fraction)
        for index in self.alive():
            callback = self.callbacks[index]
            if callback is not None:
                try:
                    callback(self._stage, value)
                except Exception as error:  # noqa: BLE001 - that photo's job fails, the batch goes on
                    self.fail(index, error)

    def finish(self) -> None:
        if self._stage is not None:
            if self._cuda_device is not None:
                torch.cuda.current_stream(self._cuda_device).synchronize()
            self.timings[self._stage] = round(time.perf_counter() - self._started, 4)
            self._done += STAGES[self._stage]
            self._stage = None

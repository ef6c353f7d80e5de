"""Fixtures of the service tests: the real pipeline on a tiny model folder, photos, live servers on loopback."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from disk_full import WritesFail
from PIL import Image
from pipeline.photos import fixture_landmarks, sample_photo
from service.live import LiveServer, SamplePhoto

from uvidm_backend.service.app import create_app
from uvidm_backend.service.settings import ServiceSettings
from uvidm_backend.service.worker import ModelHolder


@pytest.fixture(scope="session")
def photo() -> SamplePhoto:
    """insightface's t1.jpg (1280x886, six faces) with the five points of its left-most face."""
    landmarks = fixture_landmarks()["t1.jpg"]["faces"][0]["lm5"]
    return SamplePhoto(sample_photo("t1.jpg").read_bytes(), "t1.jpg", landmarks)


@pytest.fixture(scope="session")
def small_photo(photo: SamplePhoto) -> SamplePhoto:
    """A 320x320 crop of t1.jpg around the same face: the same work per job at a fraction of the pixels."""
    left, top = 0, 200
    with Image.open(io.BytesIO(photo.data)) as image:
        crop = image.convert("RGB").crop((left, top, left + 320, top + 320))
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=92)
    points = [[x - left, y - top] for x, y in photo.landmarks]
    return SamplePhoto(buffer.getvalue(), "crop.jpg", points)


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: pytest.TempPathFactory):
    from uvidm_backend.devtools.model_folder import write_model_folder

    return write_model_folder(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def pipeline(model_paths):
    """The real pipeline, loaded once (as the service keeps it warm) and shared by the test servers."""
    from uvidm_backend.pipeline import Pipeline

    return Pipeline.load(model_paths, device="cpu")


@pytest.fixture
def serve(tmp_path: Path, pipeline):
    """serve(runner=None, **settings) starts a server (the shared pipeline unless a runner or ModelHolder is
    given; jobs in tmp_path/jobs unless jobs_dir is given); all are stopped at the end of the test."""
    started: list[LiveServer] = []

    def start(runner: Any = None, **overrides: Any) -> LiveServer:
        overrides.setdefault("jobs_dir", tmp_path / "jobs")
        settings = ServiceSettings(**overrides)
        server = LiveServer(create_app(settings, pipeline if runner is None else runner), settings).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def gate(pipeline):
    """A ModelHolder whose 'loading' ends only when the test sets the event: jobs stay queued until then."""
    event = threading.Event()

    def load():
        event.wait()
        return pipeline

    yield ModelHolder(load=load), event
    event.set()




class SmallDisk:
    """A folder on a nearly full file system. `fill(free)` leaves about `free` bytes, `empty()` undoes it.

    A 2 MiB tmpfs where the test may mount one (root with CAP_SYS_ADMIN): the kernel's own ENOSPC.
    Elsewhere a plain folder, and while filled every write into it through the backend's one write path
    (output_folder.write_bytes) fails at the write call with ENOSPC, as on a full disk.
    """

    def __init__(self, path: Path, mounted: bool):
        self.path = path
        self.mounted = mounted
        self.filled = False
        self._filler = path / "filler"

    def fill(self, free: int = 0) -> None:
        if self.mounted:
            stats = os.statvfs(self.path)
            with open(self._filler, "ab") as filler:
                filler.write(bytes(max(0, stats.f_bavail * stats.f_frsize - free)))
        self.filled = True

    def empty(self) -> None:
        self._filler.unlink(missing_ok=True)
        self.filled = False


def _mount_tmpfs(path: Path) -> bool:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from uvidm_backend.pipeline import output_folder

    path = tmp_path / "small-disk"
    path.mkdir()
    disk = SmallDisk(path, _mount_tmpfs(path))
    if not disk.mounted:
        real_open = open

        def full_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            inside = Path(file).resolve().is_relative_to(path.resolve())
            return WritesFail(handle) if disk.filled and inside and ("w" in mode or "x" in mode) else handle

        monkeypatch.setattr(output_folder, "open", full_open, raising=False)
    yield disk
    if disk.mounted:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)

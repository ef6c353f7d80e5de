"""A real `uvidm serve` for the add-on's tests: a subprocess on a free loopback port, on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SMALL_JOB = {"steps": 2, "texture_size": 256, "sampler": "dpmpp"}  # seconds on the CPU
LONG_STEPS = 500  # a job that runs long enough to be cancelled or to block the queue


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveBackend:
    """`python -m uvidm_backend.cli serve` on loopback; `url`, `token`, its log and jobs folder."""

    models: Path
    workdir: Path
    token: str | None = None
    options: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        path = self.workdir / "serve.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def start(self, wait_for: str = "ready") -> LiveBackend:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "uvidm_backend.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--weights", str(self.models / "weights"), "--bfm", str(self.models / "BFM"), "--device", "cpu",
                "--jobs-dir", str(self.workdir / "jobs"), *self.options]
        if self.token:
            argv += ["--token", self.token]
        env = {**os.environ, "PYTHONPATH": "", **self.env}
        with open(self.workdir / "serve.log", "w") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env)
        deadline = time.monotonic() + 120
        while True:
            state = self.models_state()
            if state is not None and state != "loading" and (wait_for == "any" or state == wait_for):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvidm serve did not become {wait_for} (state {state}):\n{self.log[-3000:]}")
            time.sleep(0.1)

    def models_state(self) -> str | None:
        try:
            with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as response:
                return json.load(response)["models"]["state"]
        except OSError:
            return None

    def request(self, method: str, path: str) -> tuple[int, dict | None]:
        """A raw request with the token (for checking the backend's side in tests)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(self.url + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


@dataclass(frozen=True)
class Photo:
    path: Path
    landmarks: list[list[float]]  # the left-most face's five points
    landmarks_file: Path  # the shared fixtures' landmarks.json (all faces of t1.jpg)

    @property
    def landmarks_json(self) -> str:
        return json.dumps(self.landmarks)


def run_job(backend: LiveBackend, photo: Photo, folder: Path, **options) -> Path:
    """One job on the live backend through the add-on's client; its files downloaded into `folder`."""
    from uvidm_blender.client import Client, JobOptions

    client = Client(backend.url, token=backend.token)
    chosen = {**SMALL_JOB, "landmarks": tuple(map(tuple, photo.landmarks)), **options}
    job = client.submit(photo.path, JobOptions(**chosen))
    deadline = time.monotonic() + 300
    while job["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.1)
        job = client.job(job["id"])
    assert job["state"] == "done", job
    client.download(job["id"], job["files"], folder)
    return folder

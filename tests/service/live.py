"""Helpers of the service tests: live servers on loopback, sample photos, polling, raw requests."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from uvidm_backend.service.server import build_server
from uvidm_backend.service.settings import ServiceSettings

SMALL_OPTIONS = {"steps": "2", "texture_size": "256"}


@dataclass(frozen=True)
class SamplePhoto:
    data: bytes
    name: str
    landmarks: list[list[float]]

    def form(self, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(files, data) for POST /v1/jobs with small options; `options` override or add fields."""
        fields = {**SMALL_OPTIONS, "landmarks": json.dumps(self.landmarks), **options}
        return {"photo": (self.name, self.data, "application/octet-stream")}, {
            key: str(value) for key, value in fields.items() if value is not None}


@dataclass
class LiveServer:
    """A real uvicorn server on a free loopback port, in a background thread of the test process."""

    app: Any
    settings: ServiceSettings
    url: str = ""
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    def start(self) -> LiveServer:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((self.settings.host, 0))  # bound before the thread starts: no port race
        self.port = sock.getsockname()[1]
        self.url = self.settings.url.rsplit(":", 1)[0] + f":{self.port}"
        self.server = build_server(self.app, self.settings)  # the timeouts and shutdown of `uvidm serve`
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=60, **kwargs)
        self.clients.append(client)
        return client

    @property
    def store(self):
        return self.app.state.store

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.server is not None and self.thread is not None and self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(60)
            assert not self.thread.is_alive(), "the test server did not stop"


def wait_for(client: httpx.Client, job_id: str, states: tuple[str, ...] = ("done", "failed", "cancelled"),
             timeout: float = 180.0, stage: str | None = None) -> dict[str, Any]:
    """Polls GET /v1/jobs/{id} until the job is in one of `states` (and at `stage`, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        if job["state"] in states and (stage is None or job["stage"] == stage):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} ({job['stage']}) after {timeout} s")
        time.sleep(0.05)


def raw_status(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> int:
    """Sends a request line as given (no client-side normalisation of '..' or %2F) and returns the status."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             *(f"{key}: {value}" for key, value in (headers or {}).items()), "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_process(model_paths, jobs_dir, *options: str, host: str = "127.0.0.1", ready_state: str = "ready",
                  env: dict[str, str] | None = None) -> Iterator[tuple[Any, str]]:
    """`uvidm serve` in a subprocess on a free port, waited for until its models are in `ready_state`:
    (process, url). Whatever it printed is in `process.output` once the block ends (it is stopped if still
    running)."""
    port = free_port(host.strip("[]"))
    command = [sys.executable, "-m", "uvidm_backend.commands.serve", "--weights", str(model_paths.weights),
               "--bfm", str(model_paths.bfm), "--device", "cpu", "--host", host, "--port", str(port),
               "--jobs-dir", str(jobs_dir), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "UVIDM_TOKEN": "", **(env or {})})
    bare = host.strip("[]")
    url = f"http://{f'[{bare}]' if ':' in bare else bare}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).json()["models"]["state"] == ready_state:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not get ready"
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.output = process.communicate(timeout=30)[0].decode()

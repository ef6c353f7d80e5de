"""Results survive a restart; jobs the service could not finish are marked failed, with a reason."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from service.live import wait_for

from uvidm_backend.service.jobs import OUTPUT_FILES


def test_restart_keeps_finished_results(serve, gate, tmp_path, small_photo):
    jobs_dir = tmp_path / "kept"
    first = serve(jobs_dir=jobs_dir)
    client = first.client()
    done = wait_for(client, client.post("/v1/jobs", files=small_photo.form()[0],
                                        data=small_photo.form()[1]).json()["id"])
    files = {name: client.get(f"/v1/jobs/{done['id']}/files/{name}").content for name in done["files"]}
    cancelled = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    running = client.post("/v1/jobs", files=small_photo.form(steps=500)[0], data=small_photo.form(steps=500)[1]).json()
    assert client.delete(f"/v1/jobs/{cancelled['id']}").status_code in (200, 202)
    wait_for(client, running["id"], states=("running",), stage="diffusion")
    first.stop()  # a clean stop: the running job is stopped and marked failed

    holder, _ = gate  # the second service never gets to run its queue
    second = serve(holder, jobs_dir=jobs_dir)
    client = second.client()
    queued = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    second.stop()

    third = serve(jobs_dir=jobs_dir)
    client = third.client()
    again = client.get(f"/v1/jobs/{done['id']}").json()
    assert again == done
    assert sorted(again["files"]) == sorted(OUTPUT_FILES)
    for name, content in files.items():
        assert client.get(f"/v1/jobs/{done['id']}/files/{name}").content == content
    assert client.get(f"/v1/jobs/{done['id']}/archive").status_code == 200
    assert client.get(f"/v1/jobs/{cancelled['id']}").json()["state"] == "cancelled"
    stopped = client.get(f"/v1/jobs/{running['id']}").json()
    assert stopped["state"] == "failed" and "stopped while this job ran" in stopped["error"]
    lost = client.get(f"/v1/jobs/{queued['id']}").json()
    assert lost["state"] == "failed" and "stopped before this job finished (it was queued)" in lost["error"]
    assert not (jobs_dir / queued["id"] / "upload").exists()
    # New work still runs after the restart.
    new = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    assert wait_for(client, new["id"])["state"] == "done"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_killed_service_marks_its_running_job_failed(serve, tmp_path, model_paths, small_photo):
    """`uvidm serve` in a subprocess, killed (SIGKILL) in the middle of a job, then started again."""
    jobs_dir, port = tmp_path / "jobs", _free_port()
    command = [sys.executable, "-m", "uvidm_backend.commands.serve", "--weights", str(model_paths.weights),
               "--bfm", str(model_paths.bfm), "--device", "cpu", "--port", str(port), "--jobs-dir", str(jobs_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "UVIDM_TOKEN": ""})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, process.stdout.read().decode()
                try:
                    if client.get("/v1/health").json()["models"]["state"] == "ready":
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not get ready"
                time.sleep(0.2)
            files, data = small_photo.form(steps=500)
            job = client.post("/v1/jobs", files=files, data=data).json()
            queued = client.post("/v1/jobs", files=files, data=data).json()
            wait_for(client, job["id"], states=("running",), stage="diffusion")
            process.send_signal(signal.SIGKILL)
            process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        process.stdout.close()

    client = serve(jobs_dir=jobs_dir).client()
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["state"] == "failed" and "stopped before this job finished (it was running)" in failed["error"]
    assert failed["files"] == [] and client.get(f"/v1/jobs/{job['id']}/archive").status_code == 409
    assert client.get(f"/v1/jobs/{queued['id']}").json()["state"] == "failed"
    assert sorted(path.name for path in (jobs_dir / job["id"]).iterdir() if not path.name.startswith(".")) == [
        "job.json"]

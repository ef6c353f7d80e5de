"""Results survive a restart; jobs the service could not finish are marked failed, with a reason."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from service.live import serve_process, wait_for

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


def test_killed_service_marks_its_running_job_failed(serve, tmp_path, model_paths, small_photo):
    """`uvidm serve` in a subprocess, killed (SIGKILL) in the middle of a job, then started again."""
    jobs_dir = tmp_path / "jobs"
    with serve_process(model_paths, jobs_dir) as (process, url), httpx.Client(base_url=url, timeout=60) as client:
        files, data = small_photo.form(steps=500)
        job = client.post("/v1/jobs", files=files, data=data).json()
        queued = client.post("/v1/jobs", files=files, data=data).json()
        wait_for(client, job["id"], states=("running",), stage="diffusion")
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    client = serve(jobs_dir=jobs_dir).client()
    failed = client.get(f"/v1/jobs/{job['id']}").json()
    assert failed["state"] == "failed" and "stopped before this job finished (it was running)" in failed["error"]
    assert failed["files"] == [] and client.get(f"/v1/jobs/{job['id']}/archive").status_code == 409
    assert client.get(f"/v1/jobs/{queued['id']}").json()["state"] == "failed"
    assert sorted(path.name for path in (jobs_dir / job["id"]).iterdir() if not path.name.startswith(".")) == [
        "job.json"]


def test_ctrl_c_ends_event_streams_and_stops_at_once(tmp_path, model_paths, small_photo):
    """SIGINT with open event streams on a running and a queued job, as the audit did (8.1 s, no `end`)."""
    with serve_process(model_paths, tmp_path / "jobs") as (process, url), httpx.Client(base_url=url) as client:
        files, data = small_photo.form(steps=500)
        running = client.post("/v1/jobs", files=files, data=data).json()
        queued = client.post("/v1/jobs", files=files, data=data).json()
        wait_for(client, running["id"], states=("running",), stage="diffusion")
        ends, opened = {}, threading.Barrier(3)

        def follow(job_id: str) -> None:
            with httpx.Client(base_url=url, timeout=30) as stream_client, \
                    stream_client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                opened.wait()
                name = None
                for line in response.iter_lines():
                    name = line[len("event: "):] if line.startswith("event: ") else name
                    if line.startswith("data: ") and name == "end":
                        ends[job_id] = (time.monotonic(), json.loads(line[len("data: "):]))
                        return

        threads = [threading.Thread(target=follow, args=(job["id"],)) for job in (running, queued)]
        for thread in threads:
            thread.start()
        opened.wait(30)
        time.sleep(0.5)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(30)
        exited = time.monotonic() - interrupted
        for thread in threads:
            thread.join(10)
    assert sorted(ends) == sorted([running["id"], queued["id"]]), "every stream must get its `end`"
    assert max(at for at, _ in ends.values()) - interrupted < 1.0
    assert ends[queued["id"]][1]["state"] == "queued"
    # The exit itself waits for the running job's next step and the interpreter's teardown (seconds on a
    # loaded machine); the bound catches a stop that hangs on the streams.
    assert process.returncode == 0 and exited < 15, (process.returncode, exited, process.output)
    assert "Traceback" not in process.output and process.output.endswith("uvidm serve: stopped\n")

"""The queue and the worker on a real server: concurrency, cancel, back-pressure, expiry."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from service.live import wait_for

from uvidm_backend.service.jobs import OUTPUT_FILES


def test_fifty_concurrent_submissions_all_finish(serve, small_photo):
    server = serve(queue_capacity=64)
    files, data = small_photo.form(steps=1)
    start = threading.Barrier(50)

    def submit(index: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            start.wait()
            return client.post("/v1/jobs", files=files, data={**data, "seed": str(index)})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(submit, range(50)))
    assert [response.status_code for response in responses] == [202] * 50, [r.text for r in responses]
    ids = [response.json()["id"] for response in responses]
    assert len(set(ids)) == 50
    client = server.client()
    seeds = set()
    for job_id in ids:
        job = wait_for(client, job_id, timeout=600)
        assert job["state"] == "done", job
        assert sorted(job["files"]) == sorted(OUTPUT_FILES)
        seeds.add(job["options"]["seed"])
        assert client.get(f"/v1/jobs/{job_id}/files/result.json").json()["options"]["seed"] == job["options"]["seed"]
    assert seeds == set(range(50))
    health = client.get("/v1/health").json()
    assert health["queue_length"] == 0
    assert sorted(path.name for path in server.settings.jobs_dir.iterdir()) == sorted(ids)


def test_cancel_queued_and_running(serve, small_photo):
    server = serve()
    client = server.client()
    files, data = small_photo.form(steps=500)  # long enough to be caught between diffusion steps
    running = client.post("/v1/jobs", files=files, data=data).json()
    queued = client.post("/v1/jobs", files=files, data=data).json()
    after = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    wait_for(client, running["id"], states=("running",), stage="diffusion")
    assert client.get(f"/v1/jobs/{queued['id']}").json()["queue_position"] == 0
    assert client.get(f"/v1/jobs/{after['id']}").json()["queue_position"] == 1

    response = client.delete(f"/v1/jobs/{queued['id']}")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert client.get(f"/v1/jobs/{after['id']}").json()["queue_position"] == 0
    assert not (server.settings.jobs_dir / queued["id"] / "upload").exists()

    response = client.delete(f"/v1/jobs/{running['id']}")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    cancelled = wait_for(client, running["id"], timeout=30)
    assert cancelled["state"] == "cancelled" and cancelled["files"] == []
    assert cancelled["stage"] == "diffusion" and cancelled["progress"] < 0.9
    assert not (server.settings.jobs_dir / running["id"] / "output").exists()
    assert [path.name for path in (server.settings.jobs_dir / running["id"]).iterdir()] == ["job.json"]

    assert wait_for(client, after["id"])["state"] == "done"  # the worker goes on
    assert client.get(f"/v1/jobs/{queued['id']}").json()["state"] == "cancelled"
    assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 204


def test_queue_full_answers_429_with_retry_after(serve, gate, small_photo):
    holder, release = gate
    server = serve(holder, queue_capacity=2)
    client = server.client()
    files, data = small_photo.form()
    first = client.post("/v1/jobs", files=files, data=data)
    second = client.post("/v1/jobs", files=files, data=data)
    assert first.status_code == second.status_code == 202
    health = client.get("/v1/health").json()
    assert health["models"]["state"] == "loading" and health["queue_length"] == 2
    assert second.json()["queue_position"] == 1

    full = client.post("/v1/jobs", files=files, data=data)
    assert full.status_code == 429 and "full" in full.json()["detail"]
    assert int(full.headers["retry-after"]) >= 1
    assert len(list(server.settings.jobs_dir.iterdir())) == 2

    # A cancelled job frees its place.
    assert client.delete(f"/v1/jobs/{first.json()['id']}").status_code == 200
    third = client.post("/v1/jobs", files=files, data=data)
    assert third.status_code == 202
    release.set()
    for job in (second, third):
        assert wait_for(client, job.json()["id"])["state"] == "done"
    assert client.get("/v1/health").json()["models"]["state"] == "ready"


def test_models_failing_to_load_are_reported(serve, small_photo):
    from uvidm_backend.pipeline.errors import ModelFilesMissing
    from uvidm_backend.service.worker import ModelHolder

    def load():
        raise ModelFilesMissing(["ldm.ckpt"], "uvidm weights download")

    server = serve(ModelHolder(load=load))
    client = server.client()
    deadline = time.monotonic() + 10
    while (health := client.get("/v1/health").json())["models"]["state"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert health["models"]["state"] == "failed" and "ldm.ckpt" in health["models"]["error"]
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1])
    assert response.status_code == 503 and "uvidm weights download" in response.json()["detail"]


def test_finished_jobs_expire(serve, gate, small_photo):
    holder, _ = gate
    server = serve(holder, keep_hours=1 / 3600, cleanup_interval_s=0.1)  # one second
    client = server.client()
    job = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    kept = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    assert client.delete(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200
    deadline = time.monotonic() + 10
    while client.get(f"/v1/jobs/{job['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the finished job did not expire"
        time.sleep(0.1)
    assert not (server.settings.jobs_dir / job["id"]).exists()
    assert client.get(f"/v1/jobs/{kept['id']}").json()["state"] == "queued"  # unfinished jobs never expire


def test_health_follows_a_background_compilation(serve):
    """`--fast auto` on a GPU goes from graph to compile while serving; health must show the switch. The
    compilation itself needs CUDA (tests/pipeline/test_generate_gpu.py), so a runner plays its description."""
    from uvidm_backend.service.worker import ModelHolder

    class Compiling:
        fast, compiling = "graph", True

        def describe(self):
            return {"device": "cuda:0", "dtype": "bfloat16", "fast": self.fast, "compiling": self.compiling,
                    "models": ["ldm"]}

        def generate_to_folder(self, *args, **kwargs):
            raise AssertionError("no job is submitted here")

    runner = Compiling()
    client = serve(ModelHolder(runner=runner)).client()
    models = client.get("/v1/health").json()["models"]
    assert models["fast"] == "graph" and models["compiling"]
    runner.fast, runner.compiling = "compile", False
    models = client.get("/v1/health").json()["models"]
    assert models["fast"] == "compile" and not models["compiling"]

"""Jobs waiting with compatible options run as one batch on a real server; each keeps its own progress,
cancel and files."""

from __future__ import annotations

import json
import threading

from service.live import wait_for

from uvidm_backend.service.jobs import OUTPUT_FILES
from uvidm_backend.service.worker import ModelHolder


class RecordingPipeline:
    """The real pipeline, noting the size of each batch it is given."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.batches: list[int] = []

    def describe(self):
        return self.pipeline.describe()

    def generate_to_folder(self, *args, **kwargs):
        self.batches.append(1)
        return self.pipeline.generate_to_folder(*args, **kwargs)

    def generate_batch(self, requests, run_batch=None):
        self.batches.append(len(requests))
        return self.pipeline.generate_batch(requests, run_batch)


def test_waiting_jobs_with_compatible_options_run_together(serve, pipeline, small_photo):
    recording = RecordingPipeline(pipeline)
    loaded = threading.Event()

    def load():
        loaded.wait(60)
        return recording

    server = serve(ModelHolder(load=load))
    client = server.client()

    def submit(**options):
        files, data = small_photo.form(**options)
        response = client.post("/v1/jobs", files=files, data=data)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    # Queued while the models "load": three of one kind (long enough to cancel one between steps), one other.
    first, cancelled, third = (submit(steps=250, seed=seed) for seed in (1, 2, 3))
    other = submit(steps=2, seed=4)
    loaded.set()
    wait_for(client, cancelled, states=("running",), stage="diffusion", timeout=120)
    assert client.get(f"/v1/jobs/{first}").json()["state"] == "running"  # in the same batch
    assert client.get(f"/v1/jobs/{other}").json()["state"] == "queued"  # other steps: not in it
    response = client.delete(f"/v1/jobs/{cancelled}")
    assert response.status_code == 202

    jobs = {job_id: wait_for(client, job_id, timeout=600) for job_id in (first, cancelled, third, other)}
    assert jobs[cancelled]["state"] == "cancelled" and jobs[cancelled]["files"] == []
    assert jobs[cancelled]["stage"] == "diffusion" and jobs[cancelled]["progress"] < 0.9
    assert not (server.settings.jobs_dir / cancelled / "output").exists()
    for job_id, seed in ((first, 1), (third, 3), (other, 4)):
        job = jobs[job_id]
        assert job["state"] == "done" and job["progress"] == 1.0, job
        assert sorted(job["files"]) == sorted(OUTPUT_FILES)
        result = json.loads(client.get(f"/v1/jobs/{job_id}/files/result.json").content)
        assert result["options"]["seed"] == seed
        assert result["batch"]["size"] == (3 if job_id != other else 1)
    assert recording.batches == [3, 1]
    # Two photos of one batch, two seeds: two textures.
    textures = [client.get(f"/v1/jobs/{job_id}/files/albedo_model.png").content for job_id in (first, third)]
    assert textures[0] != textures[1]

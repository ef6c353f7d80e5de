"""`uvidm serve` without model files: health says what is missing, POST /v1/models/download fetches them from
the hub stand-in on loopback (real HTTP both ways, the real command), the models load without a restart and
a job runs; a failed download is reported and leaves nothing that looks valid."""

from __future__ import annotations

import json

import httpx
from hub_standin import HubStandIn, release_files
from service.live import serve_process, wait_for

from uvidm_backend.registry import HUB_REPOSITORY, ModelPaths


def events_of(client: httpx.Client) -> list[tuple[str, object]]:
    """The download's event stream until `end`: (event name, data) pairs."""
    found, name = [], "message"
    with client.stream("GET", "/v1/models/events", timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                found.append((name, json.loads(line[6:])))
                if name == "end":
                    break
                name = "message"
    return found


def test_without_files_the_service_downloads_them_then_runs_a_job(release, detector_zip, photo, tmp_path):
    paths = ModelPaths.resolve(tmp_path / "m" / "weights", tmp_path / "m" / "BFM")
    with HubStandIn(HUB_REPOSITORY, release_files(release), detector_zip=detector_zip) as hub, \
            serve_process(paths, tmp_path / "jobs", ready_state="missing",
                          env={**hub.env(), "HF_HUB_CACHE": str(tmp_path / "cache")}) as (process, url), \
            httpx.Client(base_url=url, timeout=60) as client:
        models = client.get("/v1/health").json()["models"]
        assert models["state"] == "missing" and models["download"] is None
        assert "ldm.ckpt" in models["missing"] and "POST /v1/models/download" in models["advice"]
        files, data = photo.form(landmarks=None)  # detection, on the downloaded buffalo_l
        refused = client.post("/v1/jobs", files=files, data=data)
        assert refused.status_code == 503 and "ldm.ckpt" in refused.json()["detail"]

        plan = client.get("/v1/models/plan").json()
        assert "non-commercial" in plan["licences"] and plan["total_bytes"] > 100_000_000
        assert {"ldm.ckpt", "front_mask.png", "buffalo_l"} <= {file["name"] for file in plan["files"]}
        assert client.post("/v1/models/download", json={"accept_licences": False}).status_code == 422
        assert not any("/resolve/" in path for _, path, _ in hub.requests)  # nothing fetched without consent

        started = client.post("/v1/models/download", json={"accept_licences": True, "revision": "main"})
        assert started.status_code == 202, started.text
        assert client.post("/v1/models/download", json={"accept_licences": True}).status_code == 409
        events = events_of(client)
        assert events[-1][0] == "end" and events[-1][1]["state"] == "done", events[-1]
        progress = [data["done_bytes"] for name, data in events if name == "message"]
        assert progress == sorted(progress) and len(progress) >= 2
        assert events[-1][1]["done_bytes"] == events[-1][1]["total_bytes"] > 0

        for _ in range(600):  # the models load in the background, no restart
            models = client.get("/v1/health").json()["models"]
            if models["state"] not in ("missing", "loading"):
                break
            __import__("time").sleep(0.2)
        assert models["state"] == "ready", models
        assert models["missing"] == [] and models["download"]["state"] == "done"
        job = client.post("/v1/jobs", files=files, data=data)
        assert job.status_code == 202, job.text
        finished = wait_for(client, job.json()["id"])
        assert finished["state"] == "done", finished
    assert json.loads((paths.weights / "models.json").read_text())["files"]["ldm.ckpt"]["source"] == "hub"


def test_a_failed_download_is_reported_and_nothing_half_written_counts(release, tmp_path):
    files = release_files(release)
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file at all" * 100)
    files["checkpoints/BFM_UV.npy"] = bad
    paths = ModelPaths.resolve(tmp_path / "m" / "weights", tmp_path / "m" / "BFM")
    with HubStandIn(HUB_REPOSITORY, files) as hub, \
            serve_process(paths, tmp_path / "jobs", ready_state="missing",
                          env={**hub.env(), "HF_HUB_CACHE": str(tmp_path / "cache"),
                               "UVIDM_INSIGHTFACE_URL": f"{hub.url}/nothing-here.zip"}) as (process, url), \
            httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/models/download", json={"accept_licences": True}).status_code == 202
        end = events_of(client)[-1]
        assert end[0] == "end" and end[1]["state"] == "failed"
        assert "BFM_UV.npy" in end[1]["error"] and "buffalo_l" in end[1]["error"]
        models = client.get("/v1/health").json()["models"]
        assert models["state"] == "missing" and "BFM_UV.npy" in models["missing"]
        assert models["download"]["state"] == "failed"
        assert client.post("/v1/models/download", json={"accept_licences": True}).status_code == 202  # again
        events_of(client)
    assert not (paths.bfm / "BFM_UV.npy").exists()
    assert "BFM_UV.npy" not in json.loads((paths.bfm / "models.json").read_text())["files"]
    assert (paths.weights / "ldm.ckpt").is_file()  # what verified is kept

"""The HTTP API on a real server (loopback) with the real pipeline on the tiny model folder."""

from __future__ import annotations

import io
import json
import secrets
import threading
import zipfile

import pytest
from PIL import Image
from pipeline.photos import heic_like, png_claiming
from service.live import raw_status, wait_for

from uvidm_backend.service.jobs import OUTPUT_FILES

MAGIC = {".glb": b"glTF", ".png": b"\x89PNG\r\n\x1a\n"}
# The stages a job reports, in the order the pipeline runs them (docs/API.md, "The job").
STAGES = ("starting", "photo", "face", "condition", "diffusion", "decode", "texture", "mesh", "preview", "files")


def read_events(client, job_id: str, first: threading.Event | None = None) -> list[tuple[str, dict]]:
    """(event name, data) of the job's event stream, up to its end event; sets `first` at the first event."""
    events, name = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
                if first is not None:
                    first.set()
                if name == "end":
                    break
    return events


def test_happy_path_end_to_end(serve, gate, photo):
    holder, release = gate  # the job waits in the queue until the event stream is open
    server = serve(holder)
    client = server.client()
    health = client.get("/v1/health").json()
    assert health["models"]["state"] == "loading" and health["queue_capacity"] == 16

    files, data = photo.form(seed=5, delight="true", expression="neutral", texture="official")
    response = client.post("/v1/jobs", files=files, data=data)
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued" and job["photo"] == "t1.jpg"
    assert job["options"]["steps"] == 2 and job["options"]["texture_size"] == 256
    assert job["options"]["seed"] == 5 and job["options"]["delight"] is True
    assert job["options"]["expression"] == "neutral" and job["options"]["landmarks"] == photo.landmarks
    assert job["options"]["texture"] == "official"

    opened, events = threading.Event(), []
    reader = threading.Thread(target=lambda: events.extend(read_events(client, job["id"], opened)))
    reader.start()
    assert opened.wait(30), "the event stream sent nothing"
    release.set()
    reader.join(180)
    # The stream follows the job from the queue through the pipeline's stages, in order, to its end.
    assert [name for name, _ in events[:1]] == ["progress"] and events[0][1]["state"] == "queued"
    assert events[-1][0] == "end" and events[-1][1]["state"] == "done"
    assert [name for name, _ in events].count("end") == 1
    progress = [data["progress"] for name, data in events if name == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    running = [data["stage"] for _, data in events if data["state"] == "running"]
    assert running, "the stream never showed the job running"
    assert [STAGES.index(stage) for stage in running] == sorted(STAGES.index(stage) for stage in running)
    health = client.get("/v1/health").json()
    assert health["models"]["state"] == "ready" and health["models"]["loaded"]
    assert health["device"] == "cpu" and health["models"]["fast"] == "off"

    done = wait_for(client, job["id"])
    assert done["state"] == "done" and done["error"] is None and done["finished"] is not None
    assert sorted(done["files"]) == sorted(OUTPUT_FILES)
    downloaded = {}
    for name in done["files"]:
        response = client.get(f"/v1/jobs/{job['id']}/files/{name}")
        assert response.status_code == 200, name
        assert response.content, name
        suffix = name[name.rindex("."):]
        if suffix in MAGIC:
            assert response.content.startswith(MAGIC[suffix]), name
        downloaded[name] = response.content
    result = json.loads(downloaded["result.json"])
    assert result["photo"]["name"] == "t1.jpg" and result["photo"]["size"] == [1280, 886]
    assert result["options"]["steps"] == 2 and set(result["coefficients"]) >= {"id", "exp", "tex"}
    assert result["texture"]["albedo"] == "official" and "albedo_model_matched.png" in downloaded
    with Image.open(io.BytesIO(downloaded["albedo.png"])) as albedo:
        assert albedo.size == (256, 256)
    assert "map_Kd albedo.png" in downloaded["head.mtl"].decode()

    response = client.get(f"/v1/jobs/{job['id']}/archive")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == sorted(OUTPUT_FILES)
        for name in archive.namelist():
            assert archive.read(name) == downloaded[name], name

    # Deleting a finished job removes it and its folder.
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not (server.settings.jobs_dir / job["id"]).exists()


def _huge_body(size: int):
    boundary = "b" + secrets.token_hex(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks():  # a generator: sent chunked, without Content-Length
        yield head
        block = b"\xff" * 65536
        for _ in range(size // len(block) + 1):
            yield block
        yield tail

    return chunks, {"content-type": f"multipart/form-data; boundary={boundary}"}


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 100, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (128, 100, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_input_gets_4xx_and_the_service_goes_on(serve, photo, small_photo):
    server = serve(max_upload_bytes=2 * 1024 * 1024, max_pixels=2_000_000)
    client = server.client()

    def submit(data: bytes, name: str = "photo.jpg", **options):
        files, fields = small_photo.form(**options)
        files = {"photo": (name, data, "image/jpeg")}
        return client.post("/v1/jobs", files=files, data=fields)

    cases = {
        "not an image": (submit(b"hello, this is text and no photo" * 10), 415, "not an image"),
        "a HEIC photo": (submit(heic_like(), "IMG_0001.HEIC"), 415, "HEIC"),
        "empty": (submit(b""), 400, "empty"),
        "truncated": (submit(photo.data[: len(photo.data) // 2]), 400, "truncated"),
        "too small": (submit(_jpeg(32, 32)), 400, "too small"),
        "too many pixels": (submit(_jpeg(1500, 1500)), 413, "megapixels"),
        "bomb header": (submit(png_claiming(30000, 30000), "bomb.png"), 413, "pixels"),
        "huge upload": (submit(b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)), 413, "MB"),
        "no photo": (client.post("/v1/jobs", data={"steps": "2"}), 422, "photo is required"),
        "not a form": (client.post("/v1/jobs", json={"steps": 2}), 422, "photo is required"),
    }
    chunks, headers = _huge_body(3 * 1024 * 1024)
    cases["huge chunked upload"] = (client.post("/v1/jobs", content=chunks(), headers=headers), 413, "MB")
    cases["long file name"] = (submit(small_photo.data, "a" * 5000 + ".jpg"), 400, "shorter file name")
    cases["too narrow"] = (submit(_png(64, 2000), "strip.png"), 400, "crop it")

    for what, (response, status, word) in cases.items():
        assert response.status_code == status, f"{what}: {response.status_code} {response.text}"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and word.lower() in detail.lower(), f"{what}: {detail}"
    assert client.get("/v1/health").json()["queue_length"] == 0
    assert not any(server.settings.jobs_dir.iterdir()), "refused uploads must leave nothing behind"

    # Still serving: a good photo after all that.
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1])
    assert response.status_code == 202, response.text
    assert wait_for(client, response.json()["id"])["state"] == "done"


def test_failing_job_reports_its_message_in_http_terms_and_the_worker_goes_on(serve, small_photo):
    client = serve().client()
    # Without landmarks the job needs the face detector, which the test model folder lacks: only the job finds out.
    files, data = small_photo.form(landmarks=None)
    bad = client.post("/v1/jobs", files=files, data=data).json()
    good = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    failed = wait_for(client, bad["id"])
    assert failed["state"] == "failed" and failed["files"] == []
    assert "the `landmarks` field" in failed["error"] and "--" not in failed["error"], failed["error"]
    assert client.get(f"/v1/jobs/{bad['id']}/files/result.json").status_code == 409
    assert client.get(f"/v1/jobs/{bad['id']}/archive").status_code == 409
    assert wait_for(client, good["id"])["state"] == "done"


def test_path_traversal_answers_404(serve, small_photo):
    server = serve()
    client = server.client()
    job = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    job_id = wait_for(client, job["id"])["id"]
    (server.settings.jobs_dir.parent / "secret.txt").write_text("secret")
    targets = [
        "/v1/jobs/..", "/v1/jobs/../health", "/v1/jobs/..%2F..%2Fsecret.txt", "/v1/jobs/%2e%2e/files/result.json",
        "/v1/jobs/%2E%2E%2F%2E%2E/archive", "/v1/jobs/....%2F%2F....%2F%2Fetc%2Fpasswd",
        f"/v1/jobs/{job_id}/files/job.json", f"/v1/jobs/{job_id}/files/upload",
        f"/v1/jobs/{job_id}/files/output", f"/v1/jobs/{job_id}/files/..%2Fjob.json",
        f"/v1/jobs/{job_id}/files/%2e%2e%2f%2e%2e%2fsecret.txt", f"/v1/jobs/{job_id}/files/..%5c..%5csecret.txt",
        f"/v1/jobs/{job_id}/files/head.glb%00.png", f"/v1/jobs/{job_id}/files/HEAD.GLB",
        f"/v1/jobs/{job_id}/files/.%2Fhead.glb", f"/v1/jobs/{job_id}%2F..%2F{job_id}/files/head.glb",
        f"/v1/jobs/{job_id}/files/%2Fetc%2Fpasswd", f"/v1/jobs/{job_id[:10]}/files/head.glb",
        f"/v1/jobs/{job_id}x%2F..%2F{job_id}/archive", "/v1/jobs/" + "A" * 22 + "/archive",
        "/v1/jobs/%2Fetc%2Fpasswd/files/result.json", "/v1/jobs/~/files/result.json",
    ]
    for target in targets:
        assert raw_status(server.port, "GET", target) == 404, target
        # DELETE exists only on /v1/jobs/{id}: elsewhere the method is not allowed (405), never served.
        assert raw_status(server.port, "DELETE", target) in (404, 405), target
    assert raw_status(server.port, "GET", f"/v1/jobs/{job_id}/files/head.glb") == 200
    assert raw_status(server.port, "GET", f"/v1/jobs/{job_id}/files/../files/head.glb") in (200, 404)
    assert (server.settings.jobs_dir / job_id / "job.json").is_file()


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic c2VjcmV0", "Bearer", "s3cret-token"])
def test_token_required(serve, gate, small_photo, header):
    holder, _ = gate  # nothing runs: the models stay 'loading'
    server = serve(holder, token="s3cret-token")
    client = server.client()
    headers = {} if header is None else {"Authorization": header}
    for method, path in [("GET", "/v1/jobs/" + "A" * 22), ("DELETE", "/v1/jobs/" + "A" * 22),
                         ("GET", "/v1/jobs/" + "A" * 22 + "/events"), ("GET", "/v1/jobs/" + "A" * 22 + "/archive"),
                         ("GET", "/v1/jobs/" + "A" * 22 + "/files/head.glb"), ("GET", "/v1/nowhere")]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1], headers=headers)
    assert response.status_code == 401 and "token" in response.json()["detail"]
    assert server.store.queue_length() == 0
    health = client.get("/v1/health", headers=headers)
    assert health.status_code == 200 and health.json()["token_required"] is True

    good = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/v1/jobs/" + "A" * 22, headers=good).status_code == 404
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1], headers=good)
    assert response.status_code == 202
    assert client.get(f"/v1/jobs/{response.json()['id']}", headers=good).json()["state"] == "queued"


def test_openapi_schema_describes_the_api(serve, gate):
    client = serve(gate[0]).client()
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {"/v1/health", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
                          "/v1/jobs/{job_id}/files/{name}", "/v1/jobs/{job_id}/archive", "/v1/faces",
                          "/v1/models/plan", "/v1/models/download", "/v1/models/events"}
    submit = paths["/v1/jobs"]["post"]
    assert submit["description"] and {"202", "413", "415", "422", "429"} <= set(submit["responses"])
    form = schema["components"]["schemas"][submit["requestBody"]["content"]["multipart/form-data"]["schema"][
        "$ref"].rsplit("/", 1)[-1]]
    assert {"photo", "landmarks", "steps", "texture_size", "texture", "head"} <= set(form["properties"])
    assert all(form["properties"][name].get("description") for name in form["properties"])
    assert "text/event-stream" in paths["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert schema["components"]["schemas"]["JobModel"]["properties"]["queue_position"]["description"]


def test_68_landmarks_are_taken_and_reported(serve, small_photo):
    """The landmarks field takes 68 iBUG points (pixels of the upload, y down); result.json says so."""
    from pipeline.photos import fixture_landmarks

    left, top = 0, 200  # small_photo's crop of t1.jpg
    lm68 = [[x - left, y - top] for x, y in fixture_landmarks()["t1.jpg"]["faces"][0]["lm68"]]
    client = serve().client()
    files, data = small_photo.form(landmarks=json.dumps(lm68))
    response = client.post("/v1/jobs", files=files, data=data)
    assert response.status_code == 202, response.text
    assert wait_for(client, response.json()["id"])["state"] == "done"
    result = client.get(f"/v1/jobs/{response.json()['id']}/files/result.json").json()
    assert result["face"]["landmarks_source"] == "given-lm68"
    eyes = [(lm68[36][i] + lm68[39][i]) / 2 for i in (0, 1)] + [(lm68[42][i] + lm68[45][i]) / 2 for i in (0, 1)]
    assert result["face"]["landmarks"][0] + result["face"]["landmarks"][1] == pytest.approx(eyes, abs=0.01)

"""The add-on's HTTP client against a real `uvidm serve` on loopback (no Blender needed)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from blender.live import LONG_STEPS, SMALL_JOB, free_port

from uvidm_blender.client import (
    OUTPUT_FILES,
    BackendError,
    BackendUnreachable,
    Client,
    JobOptions,
    describe_health,
    describe_job,
    encode_multipart,
    in_blender_words,
    is_loopback,
    normalize_url,
    url_problem,
)


def test_normalize_url():
    assert normalize_url("localhost:8765/") == "http://localhost:8765"
    assert normalize_url("") == "http://127.0.0.1:8765"
    assert normalize_url(" https://example.invalid/uvidm/ ") == "https://example.invalid/uvidm"


@pytest.mark.parametrize("url, words", [
    ("http://host name:8765", "spaces or control characters"),
    ("http://gpu-box:port", "not a valid address"),
    ("ftp://gpu-box:8765", "must start with http"),
    ("http://:8765", "names no computer"),
])
def test_malformed_urls_are_refused_in_words(url, words):
    assert words in url_problem(url)
    with pytest.raises(BackendError, match=words):
        Client(url).health()
    assert url_problem("http://192.168.1.20:8765") is None


def test_loopback_urls():
    assert is_loopback("127.0.0.1:9000") and is_loopback("http://localhost:8765") and is_loopback("http://[::1]:80")
    assert not is_loopback("http://gpu-box.invalid:8765")


def test_form_fields_only_carry_what_was_set():
    options = JobOptions(face_index=1, landmarks=((1, 2),) * 5, steps=20, delight=True, expression="neutral")
    fields = options.form_fields()
    assert fields == {"face_index": "1", "landmarks": json.dumps([[1.0, 2.0]] * 5), "steps": "20",
                      "delight": "true", "expression": "neutral"}
    body, content_type = encode_multipart(fields, {"photo": ("a.jpg", b"\xff\xd8data", "image/jpeg")})
    boundary = content_type.split("boundary=")[1]
    assert body.count(f"--{boundary}".encode()) == len(fields) + 2  # each part, and the closing line
    assert b'filename="a.jpg"' in body and b"\xff\xd8data" in body


def _wait(client: Client, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while (job := client.job(job_id))["state"] not in states:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_health_submit_poll_download_delete(backend, photo, tmp_path):
    client = Client(backend.url)
    health = client.health()
    assert health["models"]["state"] == "ready" and health["device"] == "cpu"
    assert describe_health(health).startswith("UV-IDM backend ") and "on cpu: ready" in describe_health(health)
    client.check_access()  # no token needed

    options = JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=2, seed=7, texture_size=256,
                         sampler="dpmpp", delight=False)
    job = client.submit(photo.path, options)
    assert job["state"] in ("queued", "running") and job["photo"] == "t1.jpg"
    job = _wait(client, job["id"])
    assert job["state"] == "done" and "head.obj" in job["files"] and "head.glb" in job["files"]
    assert job["options"]["seed"] == 7 and job["options"]["steps"] == 2

    folder = client.download(job["id"], job["files"], tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(job["files"])
    assert (folder / "head.glb").read_bytes()[:4] == b"glTF"
    assert json.loads((folder / "result.json").read_text())["photo"]["name"] == "t1.jpg"
    assert client.cancel(job["id"]) is None  # a finished job is deleted: 204
    with pytest.raises(BackendError, match="does not know this job") as caught:
        client.job(job["id"])
    assert caught.value.status == 404


def test_the_official_texture_and_both_heads_reach_blender(backend, photo, tmp_path):
    """The panel's Look and Head options as the form sends them, and every file they make downloaded."""
    client = Client(backend.url)
    options = JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=2, texture_size=256,
                         texture="official", head="both")
    assert {"texture": "official", "head": "both"}.items() <= options.form_fields().items()
    job = _wait(client, client.submit(photo.path, options)["id"])
    assert job["state"] == "done", job
    assert {"head.glb", "head_full.glb", "head_full_skin.png", "albedo_model_matched.png"} <= set(job["files"])
    folder = client.download(job["id"], [name for name in job["files"] if name in OUTPUT_FILES], tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(job["files"])  # nothing the add-on leaves behind
    result = json.loads((folder / "result.json").read_text())
    assert result["texture"]["albedo"] == "official" and result["options"]["head"] == "both"


def test_cancel_running_and_queued_jobs(backend, photo):
    client = Client(backend.url)
    options = JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=LONG_STEPS, texture_size=256)
    running = client.submit(photo.path, options)
    queued = client.submit(photo.path, options)
    _wait(client, running["id"], states=("running",))
    answer = client.cancel(queued["id"])  # 200: a queued job is cancelled at once
    assert answer["state"] == "cancelled" and describe_job(answer) == "Cancelled"
    answer = client.cancel(running["id"])  # 202: a running job is asked to stop
    assert answer["cancel_requested"] is True
    assert _wait(client, running["id"])["state"] == "cancelled"


def test_faces_from_a_landmarks_file(backend, photo):
    answer = Client(backend.url).faces(photo.path, photo.landmarks_file)
    assert answer["source"] == "landmarks" and len(answer["faces"]) == 6
    # the file's points for the left-most face (the official five, taken from its 68 points where it has them)
    first = [value for point in answer["faces"][0]["points"] for value in point]
    assert first == pytest.approx([value for point in photo.landmarks for value in point], abs=3.0)
    with pytest.raises(BackendError, match="buffalo_l.*Download Model Files") as caught:
        Client(backend.url).faces(photo.path)  # no face detector in the test model folder
    assert "--landmarks" not in caught.value.message and "choose a landmarks file" in caught.value.message


def test_wrong_token_is_found_by_the_check(start_backend, photo):
    guarded = start_backend(token="s3cret")
    health = Client(guarded.url, token="wrong").health()  # health is open to everyone...
    assert health["token_required"] is True
    for token in ("wrong", None):
        with pytest.raises(BackendError, match="refused the access token") as caught:
            Client(guarded.url, token=token).check_access()  # ...the check is not
        assert caught.value.status == 401
    Client(guarded.url, token="s3cret").check_access()
    with pytest.raises(BackendError, match="refused the access token"):
        Client(guarded.url, token="wrong").submit(photo.path)


def test_full_queue_is_reported(start_backend, photo):
    small = start_backend(options=("--queue-capacity", "1"))
    client = Client(small.url)
    long_job = JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=LONG_STEPS, texture_size=256)
    running = client.submit(photo.path, long_job)
    _wait(client, running["id"], states=("running",))
    client.submit(photo.path, long_job)  # waits in the one queue place
    with pytest.raises(BackendError, match="busy") as caught:
        client.submit(photo.path, long_job)
    assert caught.value.status == 429 and caught.value.retry_after is not None


def test_errors_in_words(backend, photo, tmp_path):
    with pytest.raises(BackendUnreachable, match="No UV-IDM backend answers at http://127.0.0.1:") as caught:
        Client(f"http://127.0.0.1:{free_port()}", timeout=2).health()
    assert "Start it" in caught.value.message
    with pytest.raises(BackendError, match="Cannot read the photo"):
        Client(backend.url).submit(tmp_path / "missing.jpg")
    with pytest.raises(BackendError, match="odd file name"):
        Client(backend.url).download("x", ["../evil"], tmp_path / "out")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(BackendError, match="cannot read this photo") as caught:
        Client(backend.url).submit(text, JobOptions(**SMALL_JOB))
    assert caught.value.message.count("JPEG or PNG") <= 1
    with pytest.raises(BackendError, match="refused the request: .*steps") as caught:
        Client(backend.url).submit(photo.path, JobOptions(steps=0))
    assert caught.value.status == 422


def test_in_blender_words():
    assert in_blender_words("no face found in t1.jpg: use a photo ..., or give five points with --landmarks") == \
        "no face found in t1.jpg: use a photo ..., or choose a landmarks file (Advanced > Landmarks)"
    assert "--" not in in_blender_words("fix the model files (`uvidm weights check`) and restart the service")


class _Page(BaseHTTPRequestHandler):
    """Some other web server: an HTML page for / and an HTML 404 for everything else."""

    def do_GET(self):
        found = self.path == "/"
        body = b"<html><body>hello</body></html>" if found else b"<html><h1>Not Found</h1></html>"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["/", ""])
def test_not_a_backend(path):
    """Another web server at the URL is reported as such: neither its HTML nor 'does not know this job'."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_address[1]}{path}")
        for call in (client.health, lambda: client.job("x" * 20)):
            with pytest.raises(BackendError, match="not (the|a) UV-IDM backend") as caught:
                call()
            assert "<html" not in caught.value.message and "does not know" not in caught.value.message
    finally:
        server.shutdown()
        server.server_close()


def test_describe_health_states():
    base = {"version": "1", "device": "cuda", "queue_length": 0, "queue_capacity": 4}
    assert "loading" in describe_health({**base, "models": {"state": "loading"}})
    assert "compiled" in describe_health({**base, "models": {"state": "ready", "fast": "graph", "compiling": True}})
    assert "compiled" not in describe_health({**base, "models": {"state": "ready", "fast": "compile",
                                                                 "compiling": False}})
    failed = describe_health({**base, "models": {"state": "failed", "error": "missing unet.ckpt"}})
    assert "missing unet.ckpt" in failed and "model folder" in failed
    warned = describe_health({**base, "device": "cpu", "device_warning": "an NVIDIA GPU is present but ...",
                              "models": {"state": "ready"}})
    assert "on cpu (a GPU is not used: an NVIDIA GPU is present" in warned
    assert describe_job({"state": "failed", "error": "no face found"}) == "Failed: no face found"
    assert describe_job({"state": "queued", "queue_position": 2}) == "Queued (2 ahead)"
    assert describe_job({"state": "running", "stage": "diffusion", "progress": 0.63}, 0.62) == \
        "Running: diffusion (62%)"

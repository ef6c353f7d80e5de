"""The add-on's HTTP client against a stand-in backend on loopback (no Blender needed)."""

import json
import socket

import pytest

from uvidm_blender.client import (
    BackendError,
    BackendUnreachable,
    Client,
    JobOptions,
    describe_health,
    describe_job,
    encode_multipart,
    normalize_url,
    parse_landmarks,
)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_normalize_url():
    assert normalize_url("localhost:8765/") == "http://localhost:8765"
    assert normalize_url("") == "http://127.0.0.1:8765"
    assert normalize_url(" https://example.invalid/uvidm/ ") == "https://example.invalid/uvidm"


def test_landmarks_parsing():
    assert parse_landmarks("") is None
    points = parse_landmarks("[[1, 2], [3, 4], [5, 6], [7, 8], [9.5, 10]]")
    assert points == ((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.5, 10.0))
    with pytest.raises(ValueError, match="five"):
        parse_landmarks("[[1, 2]]")
    with pytest.raises(ValueError, match="JSON"):
        parse_landmarks("[[1, 2],")


def test_form_fields_only_carry_what_was_set():
    options = JobOptions(face_index=1, landmarks=((1, 2),) * 5, steps=20, delight=True, expression="neutral")
    fields = options.form_fields()
    assert fields == {"face_index": "1", "landmarks": json.dumps([[1.0, 2.0]] * 5), "steps": "20",
                      "delight": "true", "expression": "neutral"}
    body, content_type = encode_multipart(fields, {"photo": ("a.jpg", b"\xff\xd8data", "image/jpeg")})
    boundary = content_type.split("boundary=")[1]
    assert body.count(f"--{boundary}".encode()) == len(fields) + 2  # each part, and the closing line
    assert b'filename="a.jpg"' in body and b"\xff\xd8data" in body


def test_health_submit_poll_download_delete(fake_backend, photo, tmp_path):
    client = Client(fake_backend.url)
    health = client.health()
    assert health["models"]["state"] == "ready"
    assert "ready" in describe_health(health)

    job = client.submit(photo, JobOptions(steps=5, seed=7, texture_size=512, delight=False))
    assert job["state"] == "queued"
    form = fake_backend.submissions[0]["form"]
    assert form == {"steps": "5", "seed": "7", "texture_size": "512", "delight": "false"}
    assert fake_backend.submissions[0]["photo"] == (photo.name, photo.read_bytes())

    job = client.job(job["id"])  # polls_until_done = 2: first poll running, second done
    assert job["state"] == "running" and "diffusion" in describe_job(job)
    job = client.job(job["id"])
    assert job["state"] == "done" and "head.obj" in job["files"]

    folder = client.download(job["id"], job["files"], tmp_path / "out")
    for name in job["files"]:
        assert (folder / name).read_bytes() == (fake_backend.result_dir / name).read_bytes()
    assert client.cancel(job["id"]) is None  # a finished job is deleted: 204
    with pytest.raises(BackendError, match="does not know this job"):
        client.job(job["id"])


def test_cancel_running_job(fake_backend, photo):
    fake_backend.hang = True
    client = Client(fake_backend.url)
    job = client.submit(photo)
    cancelled = client.cancel(job["id"])
    assert cancelled["state"] == "cancelled" and fake_backend.deleted == [job["id"]]
    assert describe_job(cancelled) == "Cancelled"


def test_errors_in_words(fake_backend, photo, tmp_path):
    with pytest.raises(BackendUnreachable, match="No UV-IDM backend answers at http://127.0.0.1:") as caught:
        Client(f"http://127.0.0.1:{_closed_port()}", timeout=2).health()
    assert "Start it" in caught.value.message

    fake_backend.token = "secret"
    with pytest.raises(BackendError, match="token") as caught:
        Client(fake_backend.url).health()
    assert caught.value.status == 401
    assert Client(fake_backend.url, token="secret").health()["version"] == "fake"

    fake_backend.token = None
    fake_backend.queue_full = 1
    with pytest.raises(BackendError, match="busy") as caught:
        Client(fake_backend.url).submit(photo)
    assert caught.value.status == 429 and caught.value.retry_after == pytest.approx(0.1)

    with pytest.raises(BackendError, match="Cannot read the photo"):
        Client(fake_backend.url).submit(tmp_path / "missing.jpg")
    with pytest.raises(BackendError, match="odd file name"):
        Client(fake_backend.url).download("x", ["../evil"], tmp_path / "out")


def test_not_a_backend(tmp_path):
    """Something else on the port (an HTML page) is reported as such, not as a crash."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(BackendError, match="not the UV-IDM backend"):
            Client(f"http://127.0.0.1:{server.server_address[1]}").health()
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
    assert describe_job({"state": "failed", "error": "no face found"}) == "Failed: no face found"
    assert describe_job({"state": "queued", "queue_position": 2}) == "Queued (2 ahead)"

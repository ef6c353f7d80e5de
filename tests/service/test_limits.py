"""What a request may cost, on a real server: the order of the submission checks, the decode budget,
deadlines for slow headers and bodies, and a shutdown that ends every event stream."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
from service.live import wait_for


def _raw(port: int, data: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Sends `data` as it is, then reads until the server closes; (what came back, seconds until closed)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, float("inf")
    return received, time.monotonic() - started


def test_a_full_queue_answers_before_the_photo_is_read(serve, gate, small_photo):
    holder, _ = gate
    server = serve(holder, queue_capacity=1)
    client = server.client()
    assert client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).status_code == 202
    # A damaged photo and bad options: with the queue full neither is looked at (a 429 costs no parse, no decode).
    damaged = {"photo": ("half.jpg", small_photo.data[: len(small_photo.data) // 2], "image/jpeg")}
    response = client.post("/v1/jobs", files=damaged, data={"steps": "0"})
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert len(list(server.settings.jobs_dir.iterdir())) == 1


def test_a_photo_beyond_the_decode_budget_is_refused_before_decoding(serve, gate, small_photo):
    import io

    from PIL import Image

    holder, _ = gate
    server = serve(holder, decode_budget_bytes=16 * 1024 * 1024)
    client = server.client()
    buffer = io.BytesIO()
    Image.new("RGBA", (1000, 1000), (120, 90, 80, 255)).save(buffer, format="PNG")  # 1 MP, 24 MB to convert
    files, data = small_photo.form()
    response = client.post("/v1/jobs", files={"photo": ("big.png", buffer.getvalue(), "image/png")}, data=data)
    assert response.status_code == 413 and "to decode" in response.json()["detail"], response.text
    assert not any(server.settings.jobs_dir.iterdir())
    assert client.post("/v1/jobs", files=files, data=data).status_code == 202  # the budget is free again


def test_slow_headers_are_cut_off(serve, gate):
    holder, _ = gate
    server = serve(holder, header_timeout_s=0.5)
    partial = f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-Slow: ".encode()
    received, seconds = _raw(server.port, partial)
    assert received.startswith(b"HTTP/1.1 408") and seconds < 3, (received, seconds)
    received, seconds = _raw(server.port, b"")  # a connection that sends nothing
    assert seconds < 3

    # Many at once, as the audit's 500 connections holding partial headers: all closed, the service answers.
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
    for sock in sockets:
        sock.sendall(partial)
    time.sleep(1.5)
    for sock in sockets:
        sock.settimeout(3)
        assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        sock.close()
    assert server.client().get("/v1/health").status_code == 200

    # On a kept-alive connection the next request's headers have the same deadline.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.sendall(partial)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
        # (the rest of the first answer may come first)
        assert b"HTTP/1.1 408" in rest and rest.endswith(b"did not arrive in time")
        assert time.monotonic() - started < 3


def test_a_body_shorter_than_its_content_length_times_out(serve, gate, small_photo):
    holder, _ = gate
    server = serve(holder, body_timeout_s=0.5, queue_capacity=1)
    boundary = "b0undary"
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n").encode()
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\r\n".encode()
    received, seconds = _raw(server.port, head + body + small_photo.data[:1000])
    assert received.startswith(b"HTTP/1.1 408") and seconds < 5, (received[:200], seconds)
    assert b"did not arrive within 0.5 s" in received
    # The queue place it held is free again.
    client = server.client()
    assert client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).status_code == 202


def test_shutdown_ends_every_event_stream_within_a_second(serve, small_photo):
    server = serve()
    client = server.client()
    running = client.post("/v1/jobs", files=small_photo.form(steps=500)[0], data=small_photo.form(steps=500)[1]).json()
    queued = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1]).json()
    wait_for(client, running["id"], states=("running",), stage="diffusion")
    ends: dict[int, tuple[float, dict]] = {}
    opened = threading.Barrier(5)

    def follow(number: int, job_id: str) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as stream_client:
            with stream_client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                opened.wait()
                name = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[len("event: "):]
                    elif line.startswith("data: ") and name == "end":
                        ends[number] = (time.monotonic(), json.loads(line[len("data: "):]))
                        return

    threads = [threading.Thread(target=follow, args=(number, job["id"]))
               for number, job in enumerate([running, running, queued, queued])]
    for thread in threads:
        thread.start()
    opened.wait(30)
    time.sleep(0.5)
    stopping = time.monotonic()
    server.stop()
    stopped = time.monotonic() - stopping
    for thread in threads:
        thread.join(10)
    assert sorted(ends) == [0, 1, 2, 3], "every stream must end with an `end` event"
    assert max(at for at, _ in ends.values()) - stopping < 1.0
    assert ends[0][1]["id"] == running["id"] and ends[2][1]["state"] == "queued"
    assert stopped < 10, f"the service took {stopped:.1f} s to stop"

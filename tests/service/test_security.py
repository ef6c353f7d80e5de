"""Who may call the service, on a real server: Host and Origin checks, CORS, tokens, IPv6 loopback, HEAD."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from service.live import serve_process, wait_for

EVIL = {"Origin": "http://evil.example", "Host": "evil.example:8765"}


def test_pages_and_rebound_names_are_refused(serve, gate, small_photo):
    holder, _ = gate
    server = serve(holder)
    client = server.client()
    # The audit's requests: a page's POST, and a GET after a DNS rebind (Host names the attacker's domain).
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1], headers=EVIL)
    assert response.status_code == 403 and "evil.example" in response.json()["detail"]
    for headers in ({"Host": "evil.example:8765"}, {"Host": "localhost.evil.example"}, {"Host": "127.0.0.1.nip.io"}):
        response = client.get("/v1/health", headers=headers)
        assert response.status_code == 403 and "host name" in response.json()["detail"], headers
    for origin in ("http://evil.example", "null", "http://localhost:3000", "http://127.0.0.1:1"):
        response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1],
                               headers={"Origin": origin})
        assert response.status_code == 403 and "Origin" in response.json()["detail"], origin
        assert "access-control-allow-origin" not in response.headers
    assert not any(server.settings.jobs_dir.iterdir()) and server.store.queue_length() == 0

    # Allowed: loopback names and addresses, with or without a port; the service's own pages (/docs).
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", "localhost:1", "LOCALHOST", "[::1]:8765", "127.0.0.2"):
        assert client.get("/v1/health", headers={"Host": host}).status_code == 200, host
    same_origin = {"Origin": server.url}
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1], headers=same_origin)
    assert response.status_code == 202, response.text
    assert "access-control-allow-origin" not in response.headers  # no CORS without --allow-origin


def test_allowed_hosts_and_origins_get_a_cors_policy(serve, small_photo):
    server = serve(allow_hosts=("studio.local",), allow_origins=("http://localhost:3000",))
    client = server.client()
    assert client.get("/v1/health", headers={"Host": "studio.local:8765"}).status_code == 200
    assert client.get("/v1/health", headers={"Host": "other.local"}).status_code == 403

    page = {"Origin": "http://localhost:3000"}
    preflight = client.options("/v1/jobs", headers={**page, "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in preflight.headers
    response = client.post("/v1/jobs", files=small_photo.form()[0], data=small_photo.form()[1], headers=page)
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "location" in response.headers["access-control-expose-headers"].lower()
    assert wait_for(client, response.json()["id"])["state"] == "done"

    other = {"Origin": "http://localhost:4000", "Access-Control-Request-Method": "POST"}
    assert client.options("/v1/jobs", headers=other).status_code == 403
    assert client.get("/v1/health", headers={"Origin": "http://localhost:4000"}).status_code == 403


def test_a_token_with_cors_leaves_preflights_open(serve, gate):
    holder, _ = gate
    client = serve(holder, token="a-long-enough-token-1234", allow_origins=("http://localhost:3000",)).client()
    page = {"Origin": "http://localhost:3000"}
    preflight = client.options("/v1/jobs/" + "A" * 22, headers={**page, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200  # browsers send no credentials with a preflight
    response = client.get("/v1/jobs/" + "A" * 22, headers=page)
    assert response.status_code == 401 and response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "--" not in response.json()["detail"]


def test_head_answers_where_get_does(serve, small_photo):
    server = serve()
    client = server.client()
    files, data = small_photo.form()
    job = wait_for(client, client.post("/v1/jobs", files=files, data=data).json()["id"])
    paths = ["/v1/health", f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/files/head.glb",
             f"/v1/jobs/{job['id']}/archive", "/openapi.json"]
    for path in paths:
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path
        assert head.headers.get("content-length") == get.headers.get("content-length"), path
    started = time.monotonic()
    head = client.head(f"/v1/jobs/{job['id']}/events")  # a stream: its headers, then nothing more
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b"" and time.monotonic() - started < 5
    assert client.head("/v1/jobs/" + "A" * 22).status_code == 404
    assert client.head("/v1/jobs").status_code == 405  # no GET there either


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_loopback_in_both_spellings(serve, gate, tmp_path, model_paths):
    holder, _ = gate
    for spelling in ("::1", "[::1]"):
        server = serve(holder, host=spelling, jobs_dir=tmp_path / spelling.strip("[]:") / "jobs")
        assert server.url.startswith("http://[::1]:")
        assert server.client().get("/v1/health").status_code == 200
        server.stop()

    # The command line with the bracketed form, as the audit ran it.
    with serve_process(model_paths, tmp_path / "cli-jobs", host="[::1]") as (process, url):
        assert url.startswith("http://[::1]:") and httpx.get(f"{url}/v1/health").status_code == 200
        process.terminate()
    assert url in process.output and "not known" not in process.output

"""Load on `uvidm serve`: requests/s and latency percentiles of GET /v1/health and GET /v1/jobs/{id},
and with --audit the figures of the service audit (issue 18): a burst of concurrent submissions (accepted
against 429) with health measured meanwhile, the memory that refused uploads of a 40 MP PNG cost, and
connections that hold partial headers.

    .venv/bin/python benchmarks/load_service.py [--duration 5] [--concurrency 8] [--url http://127.0.0.1:8765]
    .venv/bin/python benchmarks/load_service.py --audit   (starts its own service, queue capacity 16)

Without --url it starts `uvidm serve` in a subprocess on a free loopback port with a tiny model
folder of random weights (devtools.model_folder) in a temporary folder, submits one job and waits
for it, so the worker is idle while the load runs. With --url it loads a running service; only
loopback addresses are accepted (this is a load generator). Bounded: at most --duration seconds
(capped at 60) and --max-requests requests per endpoint. The client runs on the same machine as
the server and shares its cores: the numbers are a floor of what the service can do.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from uvidm_backend.service.settings import is_loopback

MAX_DURATION_S = 60.0


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def hammer(client: httpx.AsyncClient, path: str, duration: float, concurrency: int,
                 max_requests: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def one_worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline and len(latencies) + errors < max_requests:
            started = time.perf_counter()
            try:
                response = await client.get(path)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            **{f"p{q}_ms": round(percentile(latencies, q) * 1e3, 2) for q in (50, 95, 99)},
            "max_ms": round(latencies[-1] * 1e3, 2) if latencies else float("nan")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_local_service(folder: Path, queue_capacity: int = 16) -> tuple[subprocess.Popen, str]:
    from uvidm_backend.devtools.model_folder import write_model_folder

    paths = write_model_folder(folder / "models")
    port = free_port()
    command = [sys.executable, "-m", "uvidm_backend.commands.serve", "--weights", str(paths.weights),
               "--bfm", str(paths.bfm), "--device", "cpu", "--port", str(port), "--jobs-dir", str(folder / "jobs"),
               "--queue-capacity", str(queue_capacity)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "UVIDM_TOKEN": ""})
    return process, f"http://127.0.0.1:{port}"


def wait_ready(client: httpx.Client, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            health = client.get("/v1/health").json()
            if health["models"]["state"] != "loading":
                return health
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the service did not get ready")
        time.sleep(0.2)


LANDMARKS = [[96, 110], [160, 110], [128, 145], [102, 180], [154, 180]]


def bench_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (170, 130, 110)).save(buffer, format="JPEG")
    return buffer.getvalue()


def submit_one_job(client: httpx.Client) -> str:
    """A small synthetic photo with five plausible points; the job is waited for, its outcome does not matter."""
    response = client.post("/v1/jobs", files={"photo": ("bench.jpg", bench_photo(), "image/jpeg")},
                           data={"steps": "2", "texture_size": "256", "landmarks": json.dumps(LANDMARKS)})
    response.raise_for_status()
    job_id = response.json()["id"]
    deadline = time.monotonic() + 300
    while client.get(f"/v1/jobs/{job_id}").json()["state"] in ("queued", "running"):
        if time.monotonic() > deadline:
            raise SystemExit("the benchmark's job did not finish")
        time.sleep(0.2)
    return job_id


async def run_load(url: str, token: str | None, job_id: str, args: argparse.Namespace) -> dict[str, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    results = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        for path in ("/v1/health", f"/v1/jobs/{job_id}"):
            await hammer(client, path, min(1.0, args.duration), args.concurrency, args.max_requests)  # warm-up
            name = "GET /v1/jobs/{id}" if path != "/v1/health" else "GET /v1/health"
            results[name] = await hammer(client, path, args.duration, args.concurrency, args.max_requests)
    return results


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def submission_burst(url: str, count: int, health_duration: float) -> dict[str, Any]:
    """`count` submissions at once (long jobs: steps 500), health hammered meanwhile; then everything cancelled."""
    photo = bench_photo()
    fields = {"steps": "500", "texture_size": "256", "landmarks": json.dumps(LANDMARKS)}
    limits = httpx.Limits(max_connections=count + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        async def submit(seed: int) -> httpx.Response:
            return await client.post("/v1/jobs", files={"photo": ("b.jpg", photo, "image/jpeg")},
                                     data={**fields, "seed": str(seed)})

        started = time.perf_counter()
        burst = asyncio.gather(*(submit(seed) for seed in range(count)))
        health = await hammer(client, "/v1/health", health_duration, 8, 100_000)
        responses = await burst
        seconds = time.perf_counter() - started
        codes = [response.status_code for response in responses]
        for response in responses:
            if response.status_code == 202:
                await client.delete(f"/v1/jobs/{response.json()['id']}")
    return {"submissions": count, "accepted": codes.count(202), "refused_429": codes.count(429),
            "other": len(codes) - codes.count(202) - codes.count(429), "seconds": round(seconds, 2),
            "health_during": health}


def refused_upload_memory(client: httpx.Client, pid: int, uploads: int) -> dict[str, Any]:
    """Fills the queue, then sends `uploads` copies of a 116 KB PNG of 39.7 megapixels: each must be a 429,
    and (the queue place is checked before the photo is read) cost no decode."""
    photo = {"photo": ("big.png", big_png(), "image/png")}
    fields = {"steps": "500", "texture_size": "256", "landmarks": json.dumps(LANDMARKS)}
    small = {"photo": ("b.jpg", bench_photo(), "image/jpeg")}
    queued = []
    while True:
        response = client.post("/v1/jobs", files=small, data=fields)
        if response.status_code != 202:
            break
        queued.append(response.json()["id"])
    before = memory_kb(pid)
    codes = [client.post("/v1/jobs", files=photo, data=fields).status_code for _ in range(uploads)]
    after = memory_kb(pid)
    for job_id in queued:
        client.delete(f"/v1/jobs/{job_id}")
    return {"uploads": uploads, "status_codes": sorted(set(codes)), "rss_mb_before": round(before["VmRSS"] / 1024),
            "rss_mb_after": round(after["VmRSS"] / 1024),
            "peak_growth_mb": round((after["VmHWM"] - before["VmHWM"]) / 1024, 1)}


def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6300, 6300), (170, 130, 110)).save(buffer, format="PNG")  # 39.7 MP, about 116 KB
    return buffer.getvalue()


def partial_headers(url: str, connections: int, wait_s: float) -> dict[str, Any]:
    """`connections` sockets that send half a request and wait: how many the service closed, and when."""
    parts = urlsplit(url)
    partial = f"GET /v1/health HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Slow: ".encode()
    sockets = []
    for _ in range(connections):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=wait_s)
        sock.sendall(partial)
        sockets.append(sock)
    started = time.monotonic()
    closed_after = []
    for sock in sockets:
        try:
            while sock.recv(65536):
                pass
            closed_after.append(time.monotonic() - started)
        except TimeoutError:
            pass
        finally:
            sock.close()
    return {"connections": connections, "closed_by_service": len(closed_after),
            "all_closed_within_s": round(max(closed_after), 2) if closed_after else None}


def run_audit(url: str, process: subprocess.Popen | None, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"burst": asyncio.run(submission_burst(url, 50, args.duration))}
    with httpx.Client(base_url=url, timeout=120) as client:
        if process is not None:
            results["refused_uploads"] = refused_upload_memory(client, process.pid, 8)
    results["partial_headers"] = partial_headers(url, 200, 30.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running service on loopback (default: start one)")
    parser.add_argument("--token", default=os.environ.get("UVIDM_TOKEN") or None, help="bearer token, if needed")
    parser.add_argument("--job", default=None, help="job id to read (default: submit one)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per endpoint (at most 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per endpoint")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--audit", action="store_true",
                        help="also the audit's figures: submission burst, refused-upload memory, partial headers")
    args = parser.parse_args()
    args.duration = min(max(args.duration, 0.1), MAX_DURATION_S)
    args.concurrency = max(1, min(args.concurrency, 256))

    process = None
    with tempfile.TemporaryDirectory(prefix="uvidm-load-") as folder:
        try:
            if args.url is None:
                process, url = start_local_service(Path(folder))
            else:
                url = args.url.rstrip("/")
                host = urlsplit(url).hostname or ""
                if not is_loopback(host):
                    raise SystemExit(f"refusing to load {host}: this script only targets loopback addresses")
            headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
                health = wait_ready(client)
                job_id = args.job or submit_one_job(client)
            results = asyncio.run(run_load(url, args.token, job_id, args))
            audit = run_audit(url, process, args) if args.audit else None
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
    meta = {"url": url, "device": health.get("device"), "concurrency": args.concurrency,
            "duration_s": args.duration, "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.json:
        print(json.dumps({"meta": meta, "results": results, "audit": audit}, indent=1))
        return
    print(f"{url}  concurrency {args.concurrency}  {args.duration:g} s per endpoint  ({os.cpu_count()} CPUs, "
          "client and server on the same machine)")
    columns = ("requests", "errors", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    print(f"{'endpoint':<20}" + "".join(f"{column:>15}" for column in columns))
    for name, row in results.items():
        print(f"{name:<20}" + "".join(f"{row[column]:>15}" for column in columns))
    if audit is not None:
        print(json.dumps(audit, indent=1))


if __name__ == "__main__":
    main()

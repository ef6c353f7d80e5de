"""Load on `uvidm serve`: requests/s and latency percentiles of GET /v1/health and GET /v1/jobs/{id}.

    .venv/bin/python benchmarks/load_service.py [--duration 5] [--concurrency 8] [--url http://127.0.0.1:8765]

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


def start_local_service(folder: Path) -> tuple[subprocess.Popen, str]:
    from uvidm_backend.devtools.model_folder import write_model_folder

    paths = write_model_folder(folder / "models")
    port = free_port()
    command = [sys.executable, "-m", "uvidm_backend.commands.serve", "--weights", str(paths.weights),
               "--bfm", str(paths.bfm), "--device", "cpu", "--port", str(port), "--jobs-dir", str(folder / "jobs")]
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


def submit_one_job(client: httpx.Client) -> str:
    """A small synthetic photo with five plausible points; the job is waited for, its outcome does not matter."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (170, 130, 110)).save(buffer, format="JPEG")
    landmarks = [[96, 110], [160, 110], [128, 145], [102, 180], [154, 180]]
    response = client.post("/v1/jobs", files={"photo": ("bench.jpg", buffer.getvalue(), "image/jpeg")},
                           data={"steps": "2", "texture_size": "256", "landmarks": json.dumps(landmarks)})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running service on loopback (default: start one)")
    parser.add_argument("--token", default=os.environ.get("UVIDM_TOKEN") or None, help="bearer token, if needed")
    parser.add_argument("--job", default=None, help="job id to read (default: submit one)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per endpoint (at most 60)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per endpoint")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
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
        print(json.dumps({"meta": meta, "results": results}, indent=1))
        return
    print(f"{url}  concurrency {args.concurrency}  {args.duration:g} s per endpoint  ({os.cpu_count()} CPUs, "
          "client and server on the same machine)")
    columns = ("requests", "errors", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    print(f"{'endpoint':<20}" + "".join(f"{column:>15}" for column in columns))
    for name, row in results.items():
        print(f"{name:<20}" + "".join(f"{row[column]:>15}" for column in columns))


if __name__ == "__main__":
    main()

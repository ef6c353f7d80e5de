"""Rasterizer timings: backend, device, triangles, resolution, median ms over warm runs.

    .venv/bin/python benchmarks/bench_raster.py [--runs 10] [--resolutions 256 1024 2048]

(from the repository root, with the package installed, or with ``PYTHONPATH=.``).

The mesh is a UV sphere of about 70,000 triangles (the size of the BFM head) in perspective,
filling most of the frame, front and back faces drawn (so the depth test works). The PyTorch
backend always runs on CPU; on CUDA it runs too, and so does nvdiffrast where installed.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from uvidm_backend.geometry.raster import NvdiffrastRasterizer, TorchRasterizer, nvdiffrast_backend


def sphere(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UV sphere with 2 (n - 1)^2 triangles, projected in perspective: (1, N, 4) clip, (F, 3)."""
    theta = torch.linspace(0.05, math.pi - 0.05, n, dtype=torch.float64)
    phi = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    v = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
    near, far, focal, distance = 0.5, 10.0, 2.5, 3.0
    z = v[:, 2] + distance
    clip_z = (far + near) / (far - near) * z - 2 * far * near / (far - near)
    clip = torch.stack([v[:, 0] * focal, v[:, 1] * focal, clip_z, z], 1).float().unsqueeze(0)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    return clip, torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])


def time_backend(rasterizer, clip, triangles, resolution, runs: int) -> tuple[float, float, int]:
    device = rasterizer.device
    clip, triangles = clip.to(device), triangles.to(device)

    def once():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = rasterizer.rasterize(clip, triangles, resolution)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, out

    _, out = once()  # warm-up (allocations, kernels, nvdiffrast buffers)
    times = [once()[0] for _ in range(runs)]
    return statistics.median(times) * 1e3, min(times) * 1e3, int(out.mask.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--grid", type=int, default=188, help="sphere grid size n: 2 (n-1)^2 triangles")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    clip, triangles = sphere(args.grid)
    backends = [TorchRasterizer("cpu")]
    if torch.cuda.is_available():
        backends.append(TorchRasterizer("cuda"))
        if nvdiffrast_backend.available():
            backends.append(NvdiffrastRasterizer("cuda"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.runs} warm runs")
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name()}")
    header = (
        f"{'backend':<11} {'device':<7} {'triangles':>9} {'resolution':>10} "
        f"{'median ms':>10} {'min ms':>8} {'covered px':>11}"
    )
    print(header)
    print("-" * len(header))
    for rasterizer in backends:
        for size in args.resolutions:
            median, best, covered = time_backend(rasterizer, clip, triangles, (size, size), args.runs)
            print(
                f"{rasterizer.name:<11} {rasterizer.device.type:<7} {len(triangles):>9} {f'{size}x{size}':>10} "
                f"{median:>10.1f} {best:>8.1f} {covered:>11}"
            )


if __name__ == "__main__":
    main()

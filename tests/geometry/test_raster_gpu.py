"""The rasterizer backends on CUDA: PyTorch backend against nvdiffrast, and against itself on CPU.

Skipped without CUDA (conftest); the nvdiffrast comparisons also skip without nvdiffrast.
"""

from __future__ import annotations

import math

import pytest
import torch

from uvidm_backend.geometry.raster import NvdiffrastRasterizer, RasterOutput, TorchRasterizer, get_rasterizer
from uvidm_backend.geometry.uv_tables import uv_lookup_tables

pytestmark = pytest.mark.gpu

RESOLUTIONS = [(256, 256), (512, 384), (1024, 1024)]


def _perspective(vertices: torch.Tensor, distance: float = 3.0, focal: float = 2.2) -> torch.Tensor:
    """(N, 3) camera-space points (camera looking down +z from -distance) -> (1, N, 4) clip."""
    near, far = 0.5, 10.0
    z = vertices[:, 2] + distance
    clip_z = (far + near) / (far - near) * z - 2 * far * near / (far - near)
    return torch.stack([vertices[:, 0] * focal, vertices[:, 1] * focal, clip_z, z], 1).float().unsqueeze(0)


def sphere_mesh(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    """UV sphere, 2 (n - 1)^2 triangles, front and back both drawn (the back must be occluded)."""
    theta = torch.linspace(0.05, math.pi - 0.05, n, dtype=torch.float64)
    phi = torch.linspace(0, 2 * math.pi, n, dtype=torch.float64)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    vertices = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
    return _perspective(vertices), _grid_triangles(n, n)


def height_field_mesh(n: int = 100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random bumpy terrain seen at an angle: self-occlusion, slivers and varied sizes."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(-1.2, 1.2, n), torch.linspace(-1.2, 1.2, n), indexing="ij")
    height = sum(
        a * torch.sin(f * u + c) * torch.cos(f * v + d)
        for a, f, c, d in (torch.rand(4, 4, generator=g) * torch.tensor([0.3, 6.0, 3.0, 3.0])).tolist()
    )
    height = height + 0.02 * torch.rand(n, n, generator=g)
    angle = 0.9
    y = height * math.cos(angle) - v * math.sin(angle)
    z = height * math.sin(angle) + v * math.cos(angle)
    return _perspective(torch.stack([u, y, z], -1).reshape(-1, 3).double()), _grid_triangles(n, n)


def _grid_triangles(rows: int, cols: int) -> torch.Tensor:
    idx = torch.arange(rows * cols).reshape(rows, cols)
    a, b = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten()
    c, d = idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    return torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])


MESHES = {"sphere": sphere_mesh, "height_field": height_field_mesh}


def _compare(ours: RasterOutput, ref: RasterOutput, min_agreement: float, bary_atol: float, depth_atol: float):
    either = ours.mask | ref.mask
    agree = ours.triangle_id == ref.triangle_id
    fraction = float((agree & either).sum()) / max(int(either.sum()), 1)
    assert fraction >= min_agreement, f"triangle ids agree on {fraction:.5f} of covered pixels"
    both = agree & ours.mask
    torch.testing.assert_close(ours.barycentric[both], ref.barycentric[both], atol=bary_atol, rtol=0)
    torch.testing.assert_close(ours.depth[both], ref.depth[both], atol=depth_atol, rtol=0)
    return fraction


def _edge_distance(clip: torch.Tensor, triangles: torch.Tensor, raster: RasterOutput, pixels: torch.Tensor):
    """Distance (pixels) from pixel centres (M, 3: batch, row, col) to the nearest edge of the
    triangle ``raster`` shows there (inf where it shows none)."""
    height, width = raster.resolution
    clip = clip.double()
    xy = torch.stack(
        [(clip[..., 0] / clip[..., 3] + 1) * width / 2 - 0.5, (clip[..., 1] / clip[..., 3] + 1) * height / 2 - 0.5], -1
    )
    b, r, c = pixels.unbind(1)
    face = raster.triangle_id[b, r, c]
    point = torch.stack([c, r], 1).double()
    corners = xy[b.unsqueeze(1), triangles[face.clamp(min=0)]]  # (M, 3, 2)
    best = torch.full((len(point),), float("inf"), dtype=torch.float64, device=point.device)
    for k in range(3):
        a, e = corners[:, k], corners[:, (k + 1) % 3] - corners[:, k]
        t = (((point - a) * e).sum(1) / (e * e).sum(1).clamp(min=1e-300)).clamp(0, 1)
        best = torch.minimum(best, (point - a - t.unsqueeze(1) * e).norm(dim=1))
    return torch.where(face >= 0, best, float("inf"))


@pytest.fixture(scope="module")
def nvdiffrast_rasterizer() -> NvdiffrastRasterizer:
    pytest.importorskip("nvdiffrast.torch")
    return get_rasterizer("cuda", "nvdiffrast")


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_torch_backend_matches_nvdiffrast(nvdiffrast_rasterizer, mesh: str, resolution):
    clip, triangles = MESHES[mesh]()
    clip, triangles = clip.cuda(), triangles.cuda()
    ours = TorchRasterizer("cuda").rasterize(clip, triangles, resolution)
    ref = nvdiffrast_rasterizer.rasterize(clip, triangles, resolution)
    assert ref.mask.float().mean() > 0.2
    # nvdiffrast snaps vertices to 1/16 pixel, so centres that close to an edge may go to the
    # neighbouring triangle (about 2% of the pixels at 256x256 with these dense meshes, 0.5% at
    # 1024x1024); everywhere else the ids must agree. Its barycentrics come from float32 clip-space
    # cross products, hence the loose barycentric tolerance.
    _compare(ours, ref, min_agreement=0.97, bary_atol=2e-3, depth_atol=1e-5)
    differ = ((ours.triangle_id != ref.triangle_id) & (ours.mask | ref.mask)).nonzero()
    distance = torch.minimum(
        _edge_distance(clip, triangles, ours, differ), _edge_distance(clip, triangles, ref, differ)
    )
    assert distance.numel() == 0 or float(distance.max()) <= 1 / 16, float(distance.max())


def test_auto_backend_prefers_nvdiffrast(nvdiffrast_rasterizer):
    assert get_rasterizer("cuda") is nvdiffrast_rasterizer
    assert isinstance(get_rasterizer("cuda", "torch"), TorchRasterizer)


def test_nvdiffrast_conversion_conventions(nvdiffrast_rasterizer):
    # Corner weights: vertex k of the triangle gets barycentric[..., k] (u, v, 1 - u - v).
    clip = torch.tensor([[[-0.8, -0.8, 0.2, 1.0], [0.8, -0.8, 0.2, 1.0], [-0.8, 0.8, 0.2, 1.0]]], device="cuda")
    triangles = torch.tensor([[0, 1, 2]], device="cuda")
    out = nvdiffrast_rasterizer.rasterize(clip, triangles, (64, 64))
    position = torch.einsum("bhwk,kc->bhwc", out.barycentric, clip[0, :, :2])
    rows, cols = torch.meshgrid(torch.arange(64.0, device="cuda"), torch.arange(64.0, device="cuda"), indexing="ij")
    mask = out.mask[0]
    torch.testing.assert_close(position[0, ..., 0][mask], ((cols + 0.5) / 32 - 1)[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(position[0, ..., 1][mask], ((rows + 0.5) / 32 - 1)[mask], atol=1e-5, rtol=0)
    assert (out.triangle_id[~out.mask] == -1).all() and torch.isinf(out.depth[~out.mask]).all()
    torch.testing.assert_close(out.depth[out.mask], torch.full_like(out.depth[out.mask], 0.2))


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_torch_backend_same_on_cuda_and_cpu(mesh: str):
    clip, triangles = MESHES[mesh]()
    cpu = TorchRasterizer("cpu").rasterize(clip, triangles, (512, 384))
    gpu = TorchRasterizer("cuda").rasterize(clip.cuda(), triangles.cuda(), (512, 384))
    assert gpu.triangle_id.is_cuda
    gpu = RasterOutput(*(t.cpu() for t in (gpu.triangle_id, gpu.barycentric, gpu.depth)))
    _compare(gpu, cpu, min_agreement=0.9999, bary_atol=1e-5, depth_atol=1e-6)


def test_uv_tables_same_on_cuda_and_cpu():
    n = 60
    u, v = torch.meshgrid(torch.linspace(0.05, 0.95, n), torch.linspace(0.05, 0.95, n), indexing="ij")
    uv = torch.stack([u, v], -1).reshape(-1, 2).double()
    uv[:, 0] += 0.01 * torch.sin(uv[:, 1] * 40)
    triangles = _grid_triangles(n, n)
    cpu_buffer, cpu_weights = uv_lookup_tables(uv, triangles, 512)
    gpu_buffer, gpu_weights = uv_lookup_tables(uv.cuda(), triangles.cuda(), 512)
    assert gpu_buffer.is_cuda
    assert torch.equal(gpu_buffer.cpu(), cpu_buffer)
    torch.testing.assert_close(gpu_weights.cpu(), cpu_weights, atol=1e-6, rtol=0)

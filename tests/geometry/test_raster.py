"""Known answers for the pure-PyTorch rasterizer (CPU) and the UV lookup tables built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvidm_backend.geometry.raster import (
    RasterOutput,
    TorchRasterizer,
    get_rasterizer,
    interpolate,
    rasterize,
)
from uvidm_backend.geometry.uv_tables import uv_lookup_tables


def clip_from_pixels(xy, height: int, width: int, z=0.0, w=1.0) -> torch.Tensor:
    """(N, 2) pixel coordinates (pixel (i, j) centred at x = j, y = i) -> (1, N, 4) clip space."""
    xy = torch.as_tensor(xy, dtype=torch.float64)
    n = xy.shape[0]
    z = torch.as_tensor(z, dtype=torch.float64).expand(n)
    w = torch.as_tensor(w, dtype=torch.float64).expand(n)
    ndc_x = (xy[:, 0] + 0.5) / width * 2 - 1
    ndc_y = (xy[:, 1] + 0.5) / height * 2 - 1
    return torch.stack([ndc_x * w, ndc_y * w, z * w, w], 1).float().unsqueeze(0)


def brute_force(clip: torch.Tensor, triangles: torch.Tensor, height: int, width: int, eps: float = 1e-5):
    """Per-pixel float64 reference: ids, barycentrics, depth and a mask of ambiguous pixels
    (centre within eps of an edge, or a depth near-tie), where either answer is right."""
    clip = clip.double().numpy()
    tri = triangles.numpy()
    batch = clip.shape[0]
    tid = -np.ones((batch, height, width), np.int64)
    bary = np.zeros((batch, height, width, 3))
    ambiguous = np.zeros((batch, height, width), bool)
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    for b in range(batch):
        w = clip[b, :, 3]
        x = (clip[b, :, 0] / w + 1) * width / 2 - 0.5
        y = (clip[b, :, 1] / w + 1) * height / 2 - 0.5
        z = clip[b, :, 2] / w
        best = np.full((height, width), np.inf)
        second = np.full((height, width), np.inf)
        for f, corner in enumerate(tri):
            if (w[corner] <= 0).any():
                continue
            (x0, x1, x2), (y0, y1, y2) = x[corner], y[corner]
            area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
            if area == 0:
                continue
            l0 = ((x1 - cols) * (y2 - rows) - (x2 - cols) * (y1 - rows)) / area
            l1 = ((x2 - cols) * (y0 - rows) - (x0 - cols) * (y2 - rows)) / area
            lam = np.stack([l0, l1, 1 - l0 - l1], -1)
            depth = lam @ z[corner]
            inside = (lam.min(-1) >= 0) & (depth >= -1) & (depth <= 1)
            ambiguous[b] |= np.abs(lam.min(-1)) < eps
            nearer = inside & (depth < best)
            second = np.where(nearer, best, np.where(inside, np.minimum(second, depth), second))
            best = np.where(nearer, depth, best)
            tid[b][nearer] = f
            q = lam / w[corner]
            bary[b][nearer] = (q / q.sum(-1, keepdims=True))[nearer]
        with np.errstate(invalid="ignore"):
            ambiguous[b] |= np.abs(second - best) < 1e-6
    return tid, bary, ambiguous


def random_mesh(generator: torch.Generator, batch: int, n_vertices: int, n_faces: int, perspective: bool):
    clip = torch.rand(batch, n_vertices, 4, generator=generator) * 2.4 - 1.2
    clip[..., 2] *= 0.9
    clip[..., 3] = torch.rand(batch, n_vertices, generator=generator) * 1.5 + 0.5 if perspective else 1.0
    clip[..., :3] *= clip[..., 3:4]
    triangles = torch.randint(0, n_vertices, (n_faces, 3), generator=generator)
    return clip, triangles


def raster(clip, triangles, height, width, **kwargs) -> RasterOutput:
    return TorchRasterizer("cpu", **kwargs).rasterize(clip, triangles, (height, width))


def test_output_types_and_empty_conventions():
    clip = clip_from_pixels([[1.3, 1.1], [6.2, 2.4], [3.1, 6.7]], 8, 10)
    out = raster(clip, torch.tensor([[0, 1, 2]]), 8, 10)
    assert out.triangle_id.shape == (1, 8, 10) and out.triangle_id.dtype == torch.int64
    assert out.barycentric.shape == (1, 8, 10, 3) and out.barycentric.dtype == torch.float32
    assert out.depth.shape == (1, 8, 10) and out.depth.dtype == torch.float32
    empty = ~out.mask
    assert empty.any() and out.mask.any()
    assert (out.triangle_id[empty] == -1).all()
    assert (out.barycentric[empty] == 0).all()
    assert torch.isinf(out.depth[empty]).all()
    assert out.resolution == (8, 10)


def test_single_triangle_half_open_coverage():
    # Right triangle with its corners on pixel centres: centres on the edges at x = 0 and y = 0
    # are owned (low-x / low-y rule), those on the hypotenuse x + y = 8 are not.
    clip = clip_from_pixels([[0, 0], [8, 0], [0, 8]], 16, 16)
    for tri in ([0, 1, 2], [0, 2, 1]):  # both windings
        out = raster(clip, torch.tensor([tri]), 16, 16)
        ys, xs = torch.nonzero(out.mask[0], as_tuple=True)
        assert out.mask.sum() == 36  # x, y >= 0, x + y < 8
        assert int((xs + ys).max()) == 7 and int(xs.min()) == 0 and int(ys.min()) == 0


@pytest.mark.parametrize("diagonal", [0, 1])
@pytest.mark.parametrize("flip", [False, True])
def test_square_two_triangles_watertight(diagonal: int, flip: bool):
    # Square [2, 10] x [3, 7] in pixel units with corners on pixel centres: the half-open rule
    # covers exactly 8 x 4 centres, each by exactly one triangle.
    corners = [[2, 3], [10, 3], [10, 7], [2, 7]]
    clip = clip_from_pixels(corners, 12, 16)
    tris = [[0, 1, 2], [0, 2, 3]] if diagonal == 0 else [[0, 1, 3], [1, 2, 3]]
    if flip:
        tris = [t[::-1] for t in tris]
    tris = torch.tensor(tris)
    both = raster(clip, tris, 12, 16).mask[0]
    first = raster(clip, tris[:1], 12, 16).mask[0]
    second = raster(clip, tris[1:], 12, 16).mask[0]
    assert both.sum() == 32
    assert not (first & second).any()
    assert torch.equal(first | second, both)
    expected = torch.zeros(12, 16, dtype=torch.bool)
    expected[3:7, 2:10] = True
    assert torch.equal(both, expected)


def test_inclusive_fill_rule_covers_centres_on_every_edge():
    corners = [[2, 3], [10, 3], [10, 7], [2, 7]]
    clip = clip_from_pixels(corners, 12, 16)
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = raster(clip, tris, 12, 16, fill_rule="inclusive")
    expected = torch.zeros(12, 16, dtype=torch.bool)
    expected[3:8, 2:11] = True
    assert torch.equal(out.mask[0], expected)
    # Centres on the shared diagonal tie in depth: the lower triangle id keeps them.
    diagonal = [(3, 2), (5, 6), (7, 10)]
    assert all(int(out.triangle_id[0, r, c]) == 0 for r, c in diagonal)
    with pytest.raises(ValueError):
        TorchRasterizer("cpu", fill_rule="bottom-right")


def test_jittered_grid_is_watertight():
    # A grid mesh whose inner vertices are jittered, some exactly onto pixel centres: every pixel
    # centre of the covered rectangle is drawn by exactly one triangle.
    g = torch.Generator().manual_seed(3)
    n = 6
    u, v = torch.meshgrid(torch.arange(n + 1.0), torch.arange(n + 1.0), indexing="xy")
    xy = torch.stack([u * 4 + 1, v * 3 + 2], -1).reshape(-1, 2)
    inner = ((u > 0) & (u < n) & (v > 0) & (v < n)).reshape(-1)
    jitter = (torch.rand(xy.shape, generator=g) - 0.5) * 1.6
    jitter[::3] = torch.round(jitter[::3])  # integer offsets keep vertices on pixel centres
    xy[inner] += jitter[inner]
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    tris = torch.cat([torch.stack([a, b, d], 1), torch.stack([a, d, c], 1)])
    clip = clip_from_pixels(xy, 32, 32)  # power-of-two sizes keep pixel coordinates exact
    counts = torch.zeros(32, 32, dtype=torch.int64)
    for t in tris:
        counts += raster(clip, t.unsqueeze(0), 32, 32).mask[0].long()
    expected = torch.zeros(32, 32, dtype=torch.int64)
    expected[2 : 2 + 3 * n, 1 : 1 + 4 * n] = 1  # half-open rectangle [1, 25) x [2, 20)
    assert torch.equal(counts, expected)
    assert torch.equal(raster(clip, tris, 32, 32).mask[0].long(), expected)


def test_nearer_triangle_wins_in_any_order():
    square = [[-2, -2], [20, -2], [20, 20], [-2, 20]]
    near = clip_from_pixels(square, 16, 16, z=-0.25)
    far = clip_from_pixels(square, 16, 16, z=0.5)
    clip = torch.cat([far, near], 1)  # vertices 0-3 far, 4-7 near
    far_tris = [[0, 1, 2], [0, 2, 3]]
    near_tris = [[4, 5, 6], [4, 6, 7]]
    for order in (far_tris + near_tris, near_tris + far_tris):
        out = raster(clip, torch.tensor(order), 16, 16)
        assert out.mask.all()
        winners = torch.tensor(order)[out.triangle_id.flatten()]
        assert (winners >= 4).all()
        torch.testing.assert_close(out.depth, torch.full_like(out.depth, -0.25))


def test_intersecting_triangles_split_by_depth():
    # Two triangles covering the image, one tilted through the other: each wins where it is nearer.
    corners = [[-4, -4], [40, -4], [-4, 40]]
    clip = torch.cat(
        [clip_from_pixels(corners, 16, 16, z=0.0), clip_from_pixels(corners, 16, 16, z=[-0.5, 0.5, -0.5])], 1
    )
    out = raster(clip, torch.tensor([[0, 1, 2], [3, 4, 5]]), 16, 16)
    tilted_depth = -0.5 + (torch.arange(16.0) + 4) / 44  # z/w along x of the tilted one
    expected = torch.where(tilted_depth < 0, 1, 0).expand(16, 16)
    assert torch.equal(out.triangle_id[0], expected)


def test_equal_depth_goes_to_lowest_triangle_id():
    clip = clip_from_pixels([[-2, -2], [20, -2], [-2, 20], [20, 20]], 8, 8, z=0.1)
    tris = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 1, 3]])
    out = raster(clip, tris, 8, 8)
    first_three = out.mask[0] & (out.triangle_id[0] != 3)
    assert (out.triangle_id[0][first_three] == 0).all()


@pytest.mark.parametrize("perspective", [False, True])
def test_matches_brute_force_on_random_meshes(perspective: bool):
    g = torch.Generator().manual_seed(11 + perspective)
    clip, tris = random_mesh(g, batch=2, n_vertices=30, n_faces=40, perspective=perspective)
    out = raster(clip, tris, 23, 31)
    tid, bary, ambiguous = brute_force(clip, tris, 23, 31)
    clear = ~ambiguous
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(out.triangle_id.numpy()[clear], tid[clear])
    covered = clear & (tid >= 0)
    np.testing.assert_allclose(out.barycentric.numpy()[covered], bary[covered], atol=2e-5)


def test_barycentrics_sum_to_one_and_reproduce_pixel_centres():
    g = torch.Generator().manual_seed(5)
    clip, tris = random_mesh(g, batch=1, n_vertices=20, n_faces=25, perspective=True)
    out = raster(clip, tris, 32, 40)
    mask = out.mask
    assert mask.sum() > 200
    torch.testing.assert_close(out.barycentric.sum(-1)[mask], torch.ones(int(mask.sum())))
    assert (out.barycentric >= 0).all()
    # Perspective-correct weights applied to clip coordinates give back the pixel's ndc and z/w.
    attr = interpolate(clip[0].double(), out, tris)
    ndc = attr[..., :3] / attr[..., 3:]
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(40.0), indexing="ij")
    expected_x = ((cols + 0.5) / 40 * 2 - 1).double().expand(1, 32, 40)
    expected_y = ((rows + 0.5) / 32 * 2 - 1).double().expand(1, 32, 40)
    torch.testing.assert_close(ndc[..., 0][mask], expected_x[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc[..., 1][mask], expected_y[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(ndc[..., 2][mask].float(), out.depth[mask], atol=1e-5, rtol=0)


def test_triangles_touching_and_crossing_the_border():
    # Covers the whole image with vertices far outside it.
    out = raster(clip_from_pixels([[-50, -50], [200, -50], [-50, 200]], 16, 20), torch.tensor([[0, 1, 2]]), 16, 20)
    assert out.mask.all()
    # Entirely outside: nothing.
    out = raster(clip_from_pixels([[-9, -9], [-2, -9], [-9, -2]], 16, 20), torch.tensor([[0, 1, 2]]), 16, 20)
    assert not out.mask.any()
    # Crossing two borders: same pixels as the brute-force reference.
    clip = clip_from_pixels([[-5.3, 3.2], [14.6, -6.1], [24.2, 19.7]], 16, 20)
    tris = torch.tensor([[0, 1, 2]])
    tid, _, ambiguous = brute_force(clip, tris, 16, 20)
    out = raster(clip, tris, 16, 20)
    assert out.mask[0, 0].any() and out.mask[0, :, -1].any() and out.mask[0, -1].any()
    np.testing.assert_array_equal(out.triangle_id.numpy()[~ambiguous], tid[~ambiguous])


def test_empty_inputs():
    clip = clip_from_pixels([[1, 1], [5, 1], [1, 5]], 8, 8)
    for tris in (torch.zeros((0, 3), dtype=torch.int64), torch.tensor([[0, 0, 1], [0, 1, 1]])):
        out = raster(clip, tris, 8, 8)
        assert (out.triangle_id == -1).all() and (out.barycentric == 0).all() and torch.isinf(out.depth).all()
    out = raster(torch.zeros((2, 0, 4)), torch.zeros((0, 3), dtype=torch.int64), 4, 6)
    assert out.triangle_id.shape == (2, 4, 6) and not out.mask.any()


def test_near_far_planes_and_vertices_behind_the_camera():
    # z/w goes from -0.45 (left) to 1.55 (right): pixels beyond the far plane are dropped.
    clip = clip_from_pixels([[-0.5, -8], [15.5, -8], [-0.5, 40]], 16, 16, z=[-0.5, 1.5, -0.5])
    clip[..., 2] += 0.05
    out = raster(clip, torch.tensor([[0, 1, 2]]), 16, 16)
    depth_at_column = -0.45 + torch.arange(16.0) / 8
    assert torch.equal(out.mask[0, 0], depth_at_column <= 1)
    assert (out.depth[out.mask] <= 1).all()
    # A triangle with a vertex at w <= 0 is dropped (documented limitation).
    clip = clip_from_pixels([[2, 2], [10, 2], [2, 10]], 16, 16, w=[1.0, 1.0, -1.0])
    assert not raster(clip, torch.tensor([[0, 1, 2]]), 16, 16).mask.any()


def test_batch_matches_single_images():
    g = torch.Generator().manual_seed(7)
    clip, tris = random_mesh(g, batch=3, n_vertices=25, n_faces=30, perspective=True)
    out = raster(clip, tris, 20, 24)
    for b in range(3):
        single = raster(clip[b : b + 1], tris, 20, 24)
        assert torch.equal(out.triangle_id[b], single.triangle_id[0])
        assert torch.equal(out.barycentric[b], single.barycentric[0])
        assert torch.equal(out.depth[b], single.depth[0])


def test_small_blocks_give_identical_results():
    # Tiny blocks force row-band splitting of large triangles and many chunks per size class.
    g = torch.Generator().manual_seed(9)
    clip, tris = random_mesh(g, batch=2, n_vertices=40, n_faces=60, perspective=True)
    ref = raster(clip, tris, 40, 48)
    small = raster(clip, tris, 40, 48, block_cells=50)
    for name in ("triangle_id", "barycentric", "depth"):
        assert torch.equal(getattr(ref, name), getattr(small, name)), name


def test_interpolate_shared_and_batched_attributes():
    clip = clip_from_pixels([[0, 0], [9, 0], [0, 9], [9, 9]], 10, 10).expand(2, -1, -1)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2]])
    out = raster(clip, tris, 10, 10)
    pixel_xy = torch.tensor([[0.0, 0.0], [9.0, 0.0], [0.0, 9.0], [9.0, 9.0]])
    shared = interpolate(pixel_xy, out, tris)
    assert shared.shape == (2, 10, 10, 2)
    rows, cols = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    mask = out.mask
    torch.testing.assert_close(shared[..., 0][mask], cols.expand(2, 10, 10)[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(shared[..., 1][mask], rows.expand(2, 10, 10)[mask], atol=1e-5, rtol=0)
    assert (shared[~mask] == 0).all()
    batched = torch.stack([torch.ones(4, 3), 2 * torch.ones(4, 3)])
    values = interpolate(batched, out, tris)
    torch.testing.assert_close(values[0][mask[0]], torch.ones(int(mask[0].sum()), 3))
    torch.testing.assert_close(values[1][mask[1]], torch.full((int(mask[1].sum()), 3), 2.0))
    attributes = torch.rand(4, 5, requires_grad=True)
    with torch.enable_grad():
        interpolate(attributes, out, tris).sum().backward()
    assert attributes.grad is not None and attributes.grad.abs().sum() > 0


def test_get_rasterizer_selection():
    cpu = get_rasterizer("cpu")
    assert isinstance(cpu, TorchRasterizer) and cpu is get_rasterizer(torch.device("cpu"), "auto")
    assert get_rasterizer(None, "torch") is cpu
    with pytest.raises(ValueError):
        get_rasterizer("cpu", "opengl")
    with pytest.raises((ValueError, ImportError)):
        get_rasterizer("cpu", "nvdiffrast")
    clip = clip_from_pixels([[1, 1], [6, 1], [1, 6]], 8, 8)
    a = rasterize(clip, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 8))
    b = raster(clip, torch.tensor([[0, 1, 2]]), 8, 8)
    assert torch.equal(a.triangle_id, b.triangle_id)


def test_uv_tables_of_a_square_layout():
    # Two triangles spanning the whole [0, 1]^2 UV square cover every texel, and the weights put
    # each texel at its own process_uv pixel position (x = c, y = r).
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tris = np.array([[0, 1, 2], [0, 2, 3]])
    for size in (8, 33, 100):
        buffer, weights = uv_lookup_tables(uv, tris, size)
        assert buffer.shape == (size, size) and buffer.dtype == torch.int64
        assert weights.shape == (size, size, 3) and weights.dtype == torch.float32
        torch.testing.assert_close(weights.sum(-1), torch.ones(size, size))
        pixels = torch.tensor(np.stack([uv[:, 0] * (size - 1), size - uv[:, 1] * (size - 1) - 1], 1)).float()
        xy = (weights.unsqueeze(-1) * pixels[torch.as_tensor(tris)[buffer]]).sum(-2)
        rows, cols = torch.meshgrid(torch.arange(size + 0.0), torch.arange(size + 0.0), indexing="ij")
        torch.testing.assert_close(xy, torch.stack([cols, rows], -1), atol=1e-4, rtol=0)


def test_uv_tables_leave_uncovered_texels_at_zero():
    uv = np.array([[0.1, 0.1], [0.6, 0.1], [0.1, 0.6]])
    buffer, weights = uv_lookup_tables(uv, np.array([[0, 1, 2]]), (16, 20))
    assert buffer.shape == (16, 20)
    covered = weights.sum(-1) > 0
    assert 0 < int(covered.sum()) < 16 * 20
    assert (buffer == 0).all() and (weights[~covered] == 0).all()
    # v points up: the triangle sits at the bottom (high rows) of the table.
    assert covered[-3:].any() and not covered[:4].any()


def test_triangle_indices_are_checked_again_after_the_triangles_change():
    # The index range of a triangle tensor is found once (on a GPU that waits for it) and kept by identity;
    # writing to the tensor makes it be checked again.
    rasterizer = TorchRasterizer()
    clip = clip_from_pixels([[1, 1], [6, 1], [1, 6]], 8, 8)
    triangles = torch.tensor([[0, 1, 2]])
    assert rasterizer.rasterize(clip, triangles, (8, 8)).mask.any()
    triangles[0, 2] = 3
    with pytest.raises(IndexError, match="out of range"):
        rasterizer.rasterize(clip, triangles, (8, 8))
    with pytest.raises(IndexError, match="out of range"):
        rasterizer.rasterize(clip, torch.tensor([[0, 1, -1]]), (8, 8))

"""Pure-PyTorch triangle rasterizer (CPU, or GPU without nvdiffrast).

Same conventions and outputs as the nvdiffrast backend (see ``base``). The official UV-IDM code
uses nvdiffrast for rendering and ships precomputed UV lookup tables; this backend lets the whole
pipeline run where nvdiffrast cannot (CPU, or a GPU without the compiled extension).

How it stays fast without a per-pixel loop:

1. Triangle setup, vectorised over all ``B * F`` triangles: pixel-space vertices, the three edge
   functions, a depth plane and the integer bounding box of covered pixel centres.
2. Triangles are grouped by bounding-box size class (rows x columns, rounded up to a few sizes
   per octave) and sorted by position. A group of ``n`` triangles is tested densely as a
   ``(rows, cols, n)`` block; every edge function is separable (``a * (y - y0) - b * (x - x0)``),
   so only the final subtraction and comparison touch the full block.
3. The depth test is a ``scatter_reduce(amin)`` of a 64-bit key ``(depth bits, triangle id)``
   into the frame: smallest depth wins, equal depths go to the lowest triangle id, the result
   does not depend on processing order.
4. For the winning triangle of each pixel, barycentrics are recomputed once (perspective
   corrected with the vertices' ``w``), and the depth is decoded from the key.

Coverage rule for pixel centres exactly on an edge (``fill_rule``):

- ``"top-left"`` (default, like GPU rasterizers): a centre on an edge belongs to the triangle that
  owns the edge; of two triangles sharing an edge exactly one owns it, so the centre is drawn
  once. A triangle owns its edges on the low-x side and its horizontal edges on the low-y side:
  an axis-aligned rectangle with corners on pixel centres covers ``x0 <= x < x1, y0 <= y < y1``.
- ``"inclusive"``: centres on any edge are covered; a centre on a shared edge then goes through
  the depth test (ties: lowest triangle id). Used for UV lookup tables, so that texels exactly on
  the border of the layout are covered.

Every edge function is evaluated from the edge's endpoints in a canonical (vertex-index) order,
so the two triangles that share an edge compute exactly opposite values: meshes are watertight.

Limitations: triangles with a vertex at ``w <= 0`` (behind the camera plane) are dropped
entirely instead of being clipped; the near/far planes are applied per pixel (``|z/w| <= 1``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import RasterOutput, check_inputs

# Candidate pixels (triangles x box cells) processed per block on CPU (GPUs: 8 times more).
_BLOCK_CELLS = 1 << 21
_EMPTY_KEY = torch.iinfo(torch.int64).max
_TINY = torch.finfo(torch.float32).tiny
_FILL_RULES = ("top-left", "inclusive")


def _size_classes(limit: int, per_octave: int) -> list[int]:
    """Box sizes up to ``limit``: 1..8 exactly, then 4 per octave (10, 12, 14, 16, 20, ...) with
    ``per_octave=4``; powers of two with ``per_octave=1``."""
    if per_octave == 1:
        sizes = [1]
        while sizes[-1] < limit:
            sizes.append(sizes[-1] * 2)
        return sizes
    sizes = list(range(1, 9))
    base = 8
    while sizes[-1] < limit:
        sizes.extend(base + base * k // per_octave for k in range(1, per_octave + 1))
        base *= 2
    return sizes


def _monotonic_bits(depth: Tensor) -> Tensor:
    """float32 -> int32 whose signed order is the float order (+0.0 and -0.0 made equal)."""
    bits = (depth + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _float_from_monotonic(mono: Tensor) -> Tensor:
    return (mono ^ ((mono >> 31) & 0x7FFFFFFF)).view(torch.float32)


class TorchRasterizer:
    """Rasterizer backend written with PyTorch tensor operations only (any device)."""

    name = "torch"

    def __init__(
        self, device: torch.device | str = "cpu", fill_rule: str = "top-left", block_cells: int | None = None
    ) -> None:
        if fill_rule not in _FILL_RULES:
            raise ValueError(f"fill_rule must be one of {_FILL_RULES}, got {fill_rule!r}")
        self.device = torch.device(device)
        self.fill_rule = fill_rule
        # Candidate cells per block: bounds peak memory (about 40 bytes a cell).
        if block_cells is None:
            block_cells = _BLOCK_CELLS if self.device.type == "cpu" else 8 * _BLOCK_CELLS
        self.block_cells = int(block_cells)

    def __repr__(self) -> str:
        return f"TorchRasterizer(device={self.device}, fill_rule={self.fill_rule!r})"

    def rasterize(self, clip_pos: Tensor, triangles: Tensor, resolution: tuple[int, int]) -> RasterOutput:
        """Rasterises ``triangles`` of ``clip_pos`` (B, N, 4) into (B, H, W) buffers."""
        clip_pos, triangles, height, width = check_inputs(clip_pos.to(self.device), triangles, resolution)
        with torch.no_grad():
            return _rasterize(
                clip_pos.detach(), triangles, height, width, self.fill_rule == "inclusive", self.block_cells
            )


def _denoise(pixels: Tensor) -> Tensor:
    """Snaps float64 pixel coordinates within 1e-9 px of a multiple of 1/256 px onto it.

    Positions written as ``(p + 0.5) / W * 2 - 1`` come back as ``p`` +- 1e-13 (not exactly ``p``);
    without this, a vertex meant to sit on a pixel centre could leave that centre out.
    """
    snapped = torch.round(pixels * 256.0) / 256.0
    return torch.where((pixels - snapped).abs() <= 1e-9, snapped, pixels)


# Columns of the per-triangle table built by _triangle_setup.
_EDGE = 0  # 3 x (anchor x, anchor y, dx, dy, threshold): edge k is opposite vertex k
_PLANE = 15  # x0, y0, z0, dz/dx, dz/dy: depth plane through vertex 0
_W = 20  # w0, w1, w2 for perspective correction


def _triangle_setup(clip_pos: Tensor, triangles: Tensor, height: int, width: int, inclusive: bool) -> dict[str, Tensor]:
    """Per-triangle data for the B * F triangles, flattened batch-major (index b * F + f)."""
    batch = clip_pos.shape[0]
    pos = clip_pos.double()
    w = pos[..., 3]
    # Pixel coordinates, computed in float64 and rounded once: pixel (i, j) is centred at (x, y) = (j, i).
    px = _denoise((pos[..., 0] / w + 1.0) * (width / 2.0) - 0.5).float()
    py = _denoise((pos[..., 1] / w + 1.0) * (height / 2.0) - 0.5).float()
    zw = (pos[..., 2] / w).float()

    vx = px[:, triangles].reshape(-1, 3)  # (B*F, 3) float32
    vy = py[:, triangles].reshape(-1, 3)
    vz = zw[:, triangles].reshape(-1, 3)
    vw = w[:, triangles].reshape(-1, 3).float()
    vidx = triangles.repeat(batch, 1)

    xd, yd, zd = vx.double(), vy.double(), vz.double()
    e1x, e1y = xd[:, 1] - xd[:, 0], yd[:, 1] - yd[:, 0]
    e2x, e2y = xd[:, 2] - xd[:, 0], yd[:, 2] - yd[:, 0]
    area = e1x * e2y - e2x * e1y  # exact sign: float32 differences and products fit in float64
    valid = (vw > 0).all(1) & torch.isfinite(vx).all(1) & torch.isfinite(vy).all(1) & (area != 0)
    valid &= ~((vz > 1).all(1) | (vz < -1).all(1))  # entirely beyond the far or the near plane

    # Integer box of the pixel centres the triangle can cover, clipped to the image.
    xmin = torch.ceil(xd.min(1).values).clamp(-1, width).long().clamp(min=0)
    xmax = torch.floor(xd.max(1).values).clamp(-1, width).long().clamp(max=width - 1)
    ymin = torch.ceil(yd.min(1).values).clamp(-1, height).long().clamp(min=0)
    ymax = torch.floor(yd.max(1).values).clamp(-1, height).long().clamp(max=height - 1)
    valid &= (xmin <= xmax) & (ymin <= ymax)

    orient = torch.where(area > 0, 1.0, -1.0).float()
    columns = []
    for k in range(3):
        a, b = (k + 1) % 3, (k + 2) % 3
        # Canonical direction (lower vertex index first): both triangles of a shared edge
        # compute the same numbers, then flip the sign exactly.
        swap = vidx[:, a] > vidx[:, b]
        ax = torch.where(swap, vx[:, b], vx[:, a])
        ay = torch.where(swap, vy[:, b], vy[:, a])
        dx = torch.where(swap, vx[:, a], vx[:, b]) - ax
        dy = torch.where(swap, vy[:, a], vy[:, b]) - ay
        sign = torch.where(swap, -orient, orient)
        dx, dy = dx * sign, dy * sign  # interior: dx * (y - ay) - dy * (x - ax) > 0
        # Ownership of pixel centres exactly on the edge (exactly one of two opposite directions
        # qualifies): edges on the low-x side, and horizontal edges on the low-y side.
        owns = (dy < 0) | ((dy == 0) & (dx > 0)) | inclusive
        threshold = torch.where(owns, -_TINY, 0.0)  # E > -tiny  <=>  E >= 0
        columns += [ax, ay, dx, dy, threshold]
    # Depth plane z/w = z0 + gx (x - x0) + gy (y - y0) (z/w is affine in screen space).
    dz1, dz2 = zd[:, 1] - zd[:, 0], zd[:, 2] - zd[:, 0]
    safe_area = torch.where(area != 0, area, 1.0)
    gx = (dz1 * e2y - dz2 * e1y) / safe_area
    gy = (dz2 * e1x - dz1 * e2x) / safe_area
    columns += [vx[:, 0], vy[:, 0], vz[:, 0], gx.float(), gy.float()]
    columns += [vw[:, 0], vw[:, 1], vw[:, 2]]
    table = torch.stack(columns)  # (23, B*F): one contiguous row per quantity

    keep = valid.nonzero().squeeze(1)
    return {
        "table": table,  # (23, B*F) float32, all triangles (columns: _EDGE, _PLANE, _W)
        "index": keep,  # flattened indices of the triangles to draw
        "box": torch.stack([ymin, ymax, xmin, xmax], 1)[keep],
        "clip": ((vz < -1) | (vz > 1)).any(1)[keep],  # needs the per-pixel near/far test
    }


def _split_large(setup: dict[str, Tensor], max_cells: int) -> dict[str, Tensor]:
    """Cuts triangles whose box exceeds ``max_cells`` into row bands (bounds block memory)."""
    box = setup["box"]
    rows = box[:, 1] - box[:, 0] + 1
    cols = box[:, 3] - box[:, 2] + 1
    if not bool((rows * cols > max_cells).any()):
        return setup
    band = (max_cells // cols).clamp(min=1)
    pieces = (rows + band - 1) // band
    owner = torch.repeat_interleave(torch.arange(len(box), device=box.device), pieces)
    first = torch.cumsum(pieces, 0) - pieces
    k = torch.arange(len(owner), device=box.device) - first[owner]
    y0 = box[owner, 0] + k * band[owner]
    y1 = torch.minimum(y0 + band[owner] - 1, box[owner, 1])
    return {
        "table": setup["table"],
        "index": setup["index"][owner],
        "box": torch.stack([y0, y1, box[owner, 2], box[owner, 3]], 1),
        "clip": setup["clip"][owner],
    }


def _rasterize(
    clip_pos: Tensor, triangles: Tensor, height: int, width: int, inclusive: bool, block_cells: int
) -> RasterOutput:
    device = clip_pos.device
    batch, n_faces = clip_pos.shape[0], triangles.shape[0]
    n_pixels = batch * height * width
    keys = torch.full((n_pixels,), _EMPTY_KEY, dtype=torch.int64, device=device)
    setup = None
    if n_faces and clip_pos.shape[1]:
        setup = _split_large(_triangle_setup(clip_pos, triangles, height, width, inclusive), block_cells)
        _depth_test(setup, keys, n_faces, height, width, block_cells)

    covered = keys != _EMPTY_KEY
    face = torch.where(covered, keys & 0xFFFFFFFF, -1)
    depth = _float_from_monotonic((keys >> 32).to(torch.int32)).clamp(-1.0, 1.0)
    depth = torch.where(covered, depth, float("inf"))
    if setup is None:
        bary = torch.zeros((batch, height, width, 3), dtype=torch.float32, device=device)
    else:
        bary = _barycentrics(setup["table"], face, covered, n_faces, height, width)
    return RasterOutput(
        triangle_id=face.view(batch, height, width),
        barycentric=bary.view(batch, height, width, 3),
        depth=depth.view(batch, height, width),
    )


def _depth_test(
    setup: dict[str, Tensor], keys: Tensor, n_faces: int, height: int, width: int, block_cells: int
) -> None:
    """Depth-tests every (triangle, pixel) candidate into ``keys``, one size class at a time."""
    box = setup["box"]
    if box.shape[0] == 0:
        return
    device = box.device
    rows = box[:, 1] - box[:, 0] + 1
    cols = box[:, 3] - box[:, 2] + 1
    # Fine classes on CPU (less waste), coarse ones on GPUs (fewer kernel launches).
    per_octave = 4 if device.type == "cpu" else 1
    sizes = torch.tensor(_size_classes(int(max(rows.max(), cols.max())), per_octave), device=device)
    n_sizes = len(sizes)
    group = torch.searchsorted(sizes, rows) * n_sizes + torch.searchsorted(sizes, cols)
    # Within a size class, order triangles by image position: neighbouring triangles write
    # neighbouring pixels, which keeps the scatter cache-friendly.
    index = setup["index"]
    image = torch.div(index, n_faces, rounding_mode="floor")
    origin = (image * height + box[:, 0]) * width + box[:, 2]
    order = torch.argsort(group * (keys.numel() + 1) + origin)
    group_ids, counts = torch.unique_consecutive(group[order], return_counts=True)
    # Everything in block order once, so that every block reads contiguous slices.
    tri = index[order]
    box = box[order].t().contiguous()  # (4, n): ymin, ymax, xmin, xmax
    coef = torch.stack([setup["table"][j].index_select(0, tri) for j in range(_W)])
    clip = setup["clip"][order].cpu()
    sizes_list = sizes.tolist()
    start = 0
    for gid, count in zip(group_ids.tolist(), counts.tolist(), strict=True):
        n_rows, n_cols = sizes_list[gid // n_sizes], sizes_list[gid % n_sizes]
        step = max(1, block_cells // (n_rows * n_cols))
        for lo in range(start, start + count, step):
            hi = min(lo + step, start + count)
            _block(
                coef[:, lo:hi], box[:, lo:hi], tri[lo:hi], bool(clip[lo:hi].any()),
                n_rows, n_cols, n_faces, height, width, keys,
            )  # fmt: skip
        start += count


def _block(
    coef: Tensor,
    box: Tensor,
    tri: Tensor,
    clip: bool,
    n_rows: int,
    n_cols: int,
    n_faces: int,
    height: int,
    width: int,
    keys: Tensor,
) -> None:
    """Tests ``n`` triangles against their (n_rows x n_cols) candidate boxes at once.

    Arrays are laid out (rows, cols, n): the triangle axis is innermost and contiguous, which keeps
    the broadcast element-wise kernels vectorised even for 1x1 boxes.
    """
    device = box.device
    n = tri.shape[0]
    ys = box[0] + torch.arange(n_rows, device=device).unsqueeze(1)  # (R, n)
    xs = box[2] + torch.arange(n_cols, device=device).unsqueeze(1)  # (C, n)
    nan = float("nan")
    yf = torch.where(ys <= box[1], ys.float(), nan).unsqueeze(1)  # (R, 1, n); past the box: NaN
    xf = torch.where(xs <= box[3], xs.float(), nan).unsqueeze(0)  # (1, C, n)
    inside = None
    for k in range(3):
        ax, ay, dx, dy, thr = coef[_EDGE + 5 * k : _EDGE + 5 * k + 5]
        test = torch.gt(dx * (yf - ay) - dy * (xf - ax), thr)
        inside = test if inside is None else inside.logical_and_(test)
    x0, y0, z0, gx, gy = coef[_PLANE : _PLANE + 5]
    depth = (z0 + gy * (yf - y0)) + gx * (xf - x0)
    if clip:
        inside.logical_and_(depth >= -1).logical_and_(depth <= 1)
    sel = inside.view(-1).nonzero().squeeze(1)
    if sel.numel() == 0:
        return
    index_dtype = torch.int32 if keys.numel() < 2**31 else torch.int64
    image = torch.div(tri, n_faces, rounding_mode="floor")
    row_pix = ((image * height + ys) * width).to(index_dtype).unsqueeze(1)  # (R, 1, n)
    pix = (row_pix + xs.to(index_dtype).unsqueeze(0)).view(-1).index_select(0, sel)
    face = (tri - image * n_faces).index_select(0, sel.to(index_dtype) % n)
    key = (_monotonic_bits(depth.view(-1).index_select(0, sel)).long() << 32) | face
    keys.scatter_reduce_(0, pix.long(), key, reduce="amin", include_self=True)


def _barycentrics(table: Tensor, face: Tensor, covered: Tensor, n_faces: int, height: int, width: int) -> Tensor:
    """Perspective-correct barycentrics (B, H, W, 3) of the winning triangle, zero where empty.

    Evaluated densely over the frame: cheaper than gathering the covered pixels' coordinates
    once a sizeable part of the frame is covered, and free of integer divisions.
    """
    batch = face.shape[0] // (height * width)
    device = face.device
    image = torch.arange(batch, device=device).view(batch, 1, 1) * n_faces
    tri = (image + face.view(batch, height, width).clamp(min=0)).view(-1)
    y = torch.arange(height, device=device, dtype=torch.float32).view(1, height, 1)
    x = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, width)

    def row(j: int) -> Tensor:
        return table[j].index_select(0, tri).view(batch, height, width)

    # Same expression as the coverage test, so these are the values that passed it (>= 0).
    q = [
        (row(_EDGE + 5 * k + 2) * (y - row(_EDGE + 5 * k + 1)) - row(_EDGE + 5 * k + 3) * (x - row(_EDGE + 5 * k)))
        .clamp_(min=0)
        .div_(row(_W + k))
        for k in range(3)
    ]
    total = q[0] + q[1] + q[2]
    scale = torch.where(covered.view(batch, height, width), 1.0 / total, 0.0)
    degenerate = covered.view(batch, height, width) & ~(total > 0)
    out = torch.empty((batch, height, width, 3), dtype=torch.float32, device=device)
    for k in range(3):
        out[..., k] = torch.where(degenerate, 1.0 / 3.0, q[k] * scale)
    return out

"""A small synthetic head in the Basel Face Model file formats, for tests and trying the tool.

The real BFM files cannot be redistributed; this module builds a stand-in with the same layouts
(see `uvidm_backend.geometry.bfm_files` for every array and index base) and writes the files the
official code reads: `BFM_model_front_5w.mat`, `BFM_model_front.mat`, `BFM_front_idx.mat`,
`example1.mat`, `BFM_UV.npy`, `similarity_Lm3D_all.mat` and, optionally, the UV lookup tables.

The head is an open ellipsoid-like shell on a longitude/latitude grid (longitude -150..150 deg,
latitude -75..75 deg, 5 deg steps: 1,891 vertices, 3,600 triangles, no UV seam), facing +z, in BFM
units (1 unit = 0.1 m): 1.5 wide, 2.2 high, 2.0 deep, with a nose, eye sockets, brows, lips and a
chin. Like the real files:

- the front part (longitude -70..70, latitude -60..55 deg) has its centroid at
  `MEAN_SHAPE_CENTER` in the stored mean shape, so after `FaceModel` subtracts that point the face
  sits at the origin (camera distance 10: 1 unit = 101.5 crop pixels, the 102 of the alignment);
  the head centre then lies about 0.7 units behind it, the nose tip about 0.5 in front;
- triangles are wound so that the official `compute_norm` yields normals pointing INTO the head:
  the face's normals point to -z, which UV-IDM's visibility test (`-n_z > 0.1`) expects;
- the 68 landmarks of `similarity_Lm3D_all.mat` lie on the mean face surface at iBUG-68 places
  (1-based ids: 31 nose tip, 37/40 and 43/46 eye corners, 49/55 mouth corners), in the coordinates
  of the stored mean shape (not re-centred).

UVs: u from longitude, v from latitude (v up), the face in the middle: u = 0.5 + 0.45 lon / 150 deg,
v = 0.5 + 0.45 lat / 75 deg (no vertex on the texture border). Bases are smooth low-frequency random
fields (seeded): identity ~3 mm, expression ~2 mm (face only) and texture ~12 (of 255) per unit
coefficient for the first components, decaying with the component index.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from uvidm_backend.geometry import bfm_files
from uvidm_backend.geometry.face_model import MEAN_SHAPE_CENTER

LONGITUDE_RANGE_DEG, LATITUDE_RANGE_DEG = 150, 75
GRID_STEP_DEG = 5.0  # 1,891 vertices; 1.25 gives 29,161 (the real BFM head has about 36,000)
SEMI_AXES = (0.75, 1.1, 1.0)  # x (half width), y (half height), z (half depth), BFM units
FRONT_LONGITUDE_DEG = 70
FRONT_LATITUDE_DEG = (-60, 55)
ID_DIMS, EXP_DIMS, TEX_DIMS = 80, 64, 80
POINT_BUF_WIDTH = 8
UV_MARGIN = 0.05  # u, v span [UV_MARGIN, 1 - UV_MARGIN]

# Per-unit-coefficient amplitude (RMS per vertex coordinate) of the first basis vector of each kind.
ID_AMPLITUDE = 0.03
EXP_AMPLITUDE = 0.02
TEX_AMPLITUDE = 12.0

# MATLAB files start with 116 bytes of free text; scipy puts the date there. A fixed text keeps
# the files byte-identical for a seed.
MAT_HEADER = b"MATLAB 5.0 MAT-file, synthetic BFM-format head written by uvidm_backend.devtools (not the BFM)"

# iBUG-68 landmark positions on the front view (x right = image right, y up), BFM units, in the
# frame of the ellipsoid (before the shift to MEAN_SHAPE_CENTER). Point 1 is on the image left.
_JAW = [(-0.64 * math.cos(phi), 0.2 - 1.02 * math.sin(phi)) for phi in np.linspace(0.0, math.pi, 17)]
_BROWS = [(-0.52, 0.34), (-0.43, 0.38), (-0.33, 0.40), (-0.22, 0.39), (-0.12, 0.36)]
_NOSE_RIDGE = [(0.0, 0.25), (0.0, 0.12), (0.0, 0.0), (0.0, -0.10)]  # 28..31, 31 = nose tip
_NOSTRILS = [(-0.13, -0.20), (-0.07, -0.22), (0.0, -0.23), (0.07, -0.22), (0.13, -0.20)]
_LEFT_EYE = [(-0.45, 0.22), (-0.37, 0.255), (-0.25, 0.255), (-0.17, 0.22), (-0.25, 0.195), (-0.37, 0.195)]
_RIGHT_EYE = [(0.17, 0.22), (0.25, 0.255), (0.37, 0.255), (0.45, 0.22), (0.37, 0.195), (0.25, 0.195)]
_OUTER_LIP = [(-0.25, -0.50), (-0.16, -0.45), (-0.06, -0.42), (0.0, -0.43), (0.06, -0.42), (0.16, -0.45),
              (0.25, -0.50), (0.16, -0.57), (0.06, -0.60), (0.0, -0.61), (-0.06, -0.60), (-0.16, -0.57)]
_INNER_LIP = [(-0.21, -0.50), (-0.08, -0.47), (0.0, -0.475), (0.08, -0.47), (0.21, -0.50), (0.08, -0.53),
              (0.0, -0.535), (-0.08, -0.53)]
LANDMARKS_XY = np.array(_JAW + _BROWS + [(-x, y) for x, y in reversed(_BROWS)] + _NOSE_RIDGE + _NOSTRILS
                        + _LEFT_EYE + _RIGHT_EYE + _OUTER_LIP + _INNER_LIP)


@dataclass(frozen=True)
class SyntheticHead:
    """The arrays of the synthetic face model, 0-based, in the stored (not re-centred) frame."""

    mean_shape: np.ndarray  # (N, 3) float64
    mean_tex: np.ndarray  # (N, 3) RGB in 0..255
    id_base: np.ndarray  # (3N, 80), row 3v + k
    exp_base: np.ndarray  # (3N, 64)
    tex_base: np.ndarray  # (3N, 80)
    triangles: np.ndarray  # (F, 3) int64 (example1.mat's full_triangles)
    uv: np.ndarray  # (N, 2) in [0, 1], v up
    front_idx: np.ndarray  # (N_front,) int64, the front vertices within the head
    front_triangles: np.ndarray  # (F_front, 3) int64 indices into front_idx
    landmarks: np.ndarray  # (68, 3) on the mean face surface (similarity_Lm3D_all.mat['lm'])
    keypoints: np.ndarray  # (68,) int64, the front vertex nearest to each landmark (head indices)

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0]


def _grid_triangles(n_lon: int, n_lat: int) -> np.ndarray:
    """Two triangles per grid cell, wound like BFM: `compute_norm` points into the head."""
    lon, lat = np.meshgrid(np.arange(n_lon - 1), np.arange(n_lat - 1))
    a = (lat * n_lon + lon).ravel()
    b, c = a + 1, a + n_lon  # b: next longitude (towards +x on the face), c: next latitude (up)
    d = c + 1
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)]).astype(np.int64)


def point_buffer(triangles: np.ndarray, n_vertices: int, width: int = POINT_BUF_WIDTH) -> np.ndarray:
    """(N, width) 0-based faces around each vertex, padded with F (Deep3DFaceRecon's `point_buf` - 1)."""
    order = np.argsort(triangles.ravel(), kind="stable")
    vertex = triangles.ravel()[order]
    face = order // 3
    counts = np.bincount(vertex, minlength=n_vertices)
    if counts.max() > width:
        raise ValueError(f"a vertex belongs to {counts.max()} triangles, more than the buffer width {width}")
    slot = np.arange(vertex.size) - np.repeat(np.cumsum(counts) - counts, counts)
    buffer = np.full((n_vertices, width), triangles.shape[0], dtype=np.int64)
    buffer[vertex, slot] = face
    return buffer


def _gauss(x: np.ndarray, y: np.ndarray, x0: float, y0: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def _relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth added to the ellipsoid's front (BFM units): nose, eye sockets, brows, lips, chin."""
    ax = np.abs(x)
    return (0.20 * _gauss(x, y, 0.0, -0.10, 0.11, 0.10)  # nose tip
            + 0.10 * _gauss(x, y, 0.0, 0.08, 0.07, 0.17)  # nose bridge
            - 0.05 * _gauss(ax, y, 0.31, 0.21, 0.11, 0.07)  # eye sockets
            + 0.025 * _gauss(ax, y, 0.28, 0.35, 0.20, 0.05)  # brow ridges
            + 0.035 * _gauss(x, y, 0.0, -0.51, 0.22, 0.07)  # lips
            + 0.04 * _gauss(x, y, 0.0, -0.82, 0.20, 0.10))  # chin


def _smoothstep(value: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((value - low) / (high - low), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _mean_texture(x: np.ndarray, y: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Skin-like RGB (0..255): darker brows and eyes, red lips, a little darker towards the back."""
    ax = np.abs(x)
    skin = np.array([205.0, 155.0, 130.0])
    colour = np.broadcast_to(skin, (x.shape[0], 3)).copy()
    colour += np.outer(_gauss(ax, y, 0.35, -0.15, 0.12, 0.12) * front, [8.0, -6.0, -4.0])  # cheeks
    for target, weight in (((120.0, 85.0, 65.0), _gauss(ax, y, 0.31, 0.37, 0.12, 0.03)),  # brows
                           ((90.0, 70.0, 60.0), _gauss(ax, y, 0.31, 0.225, 0.06, 0.025)),  # eyes
                           ((180.0, 95.0, 90.0), _gauss(x, y, 0.0, -0.51, 0.17, 0.05))):  # lips
        weight = (weight * front)[:, None]
        colour = colour * (1 - weight) + np.asarray(target) * weight
    colour *= (0.85 + 0.15 * front)[:, None]
    return np.clip(colour, 0.0, 255.0)


def _smooth_fields(s: np.ndarray, t: np.ndarray, order: int = 5) -> np.ndarray:
    """(N, order^2) low-frequency cosine fields over the grid coordinates s, t in [-1, 1], unit RMS."""
    fields = np.stack([np.cos(math.pi * p * (s + 1) / 2) * np.cos(math.pi * q * (t + 1) / 2)
                       for p in range(order) for q in range(order)], axis=1)
    return fields / np.sqrt(np.mean(fields ** 2, axis=0, keepdims=True))


def _random_basis(rng: np.random.Generator, fields: np.ndarray, dims: int, amplitude: float,
                  weight: np.ndarray | None = None) -> np.ndarray:
    """(3N, dims) smooth random basis, component k scaled by amplitude / (1 + k / 8)."""
    mixing = rng.standard_normal((fields.shape[1], 3, dims)) / math.sqrt(fields.shape[1])
    basis = np.einsum("nm,mck->nck", fields, mixing)
    basis *= amplitude / (1.0 + np.arange(dims) / 8.0)
    if weight is not None:
        basis *= weight[:, None, None]
    return basis.reshape(-1, dims)


def _cast_onto_surface(points_xy: np.ndarray, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """The front-most surface point under each (x, y) (a ray along -z): (P, 3)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    usable = np.abs(area) > 1e-12
    a, b, c, area = a[usable], b[usable], c[usable], area[usable]
    px, py = points_xy[:, None, 0], points_xy[:, None, 1]
    w_b = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (py - a[:, 1])) / area
    w_c = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])) / area
    w_a = 1.0 - w_b - w_c
    inside = (w_a >= -1e-9) & (w_b >= -1e-9) & (w_c >= -1e-9)
    z = np.where(inside, w_a * a[:, 2] + w_b * b[:, 2] + w_c * c[:, 2], -np.inf)
    if not np.all(np.isfinite(z.max(axis=1))):
        raise ValueError("a landmark lies outside the synthetic head's silhouette")
    return np.concatenate([points_xy, z.max(axis=1, keepdims=True)], axis=1)


def _grid_degrees(half_range: float, step: float) -> np.ndarray:
    return np.linspace(-half_range, half_range, 2 * round(half_range / step) + 1)


def synthetic_head(seed: int = 0, grid_step_deg: float = GRID_STEP_DEG) -> SyntheticHead:
    """Builds the synthetic head; the geometry is fixed, the bases are random from `seed`.

    `grid_step_deg` sets the mesh density (it must divide 5 deg, so the front region keeps its borders):
    the default gives the small test head, 1.25 a head of about the real BFM's size for benchmarks.
    """
    if not math.isclose(5.0 / grid_step_deg, round(5.0 / grid_step_deg)):
        raise ValueError(f"grid step {grid_step_deg} deg must divide 5 deg")
    rng = np.random.default_rng(seed)
    longitudes, latitudes = (_grid_degrees(LONGITUDE_RANGE_DEG, grid_step_deg),
                             _grid_degrees(LATITUDE_RANGE_DEG, grid_step_deg))
    n_lon, n_lat = longitudes.size, latitudes.size
    lat_deg, lon_deg = (value.ravel().astype(np.float64)
                        for value in np.meshgrid(latitudes, longitudes, indexing="ij"))
    lat, lon = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    half_width, half_height, half_depth = SEMI_AXES
    x = half_width * np.cos(lat) * np.sin(lon)
    y = half_height * np.sin(lat)
    z = half_depth * np.cos(lat) * np.cos(lon)
    front = _smoothstep(z / half_depth, 0.35, 0.75)  # where the face features may go
    z = z + front * _relief(x, y)
    vertices = np.stack([x, y, z], axis=1)
    triangles = _grid_triangles(n_lon, n_lat)

    is_front = (np.abs(lon_deg) <= FRONT_LONGITUDE_DEG) & (lat_deg >= FRONT_LATITUDE_DEG[0]) & (
        lat_deg <= FRONT_LATITUDE_DEG[1])
    front_idx = np.flatnonzero(is_front)
    position = np.full(vertices.shape[0], -1, dtype=np.int64)
    position[front_idx] = np.arange(front_idx.size)
    front_triangles = position[triangles[np.all(is_front[triangles], axis=1)]]

    landmarks = _cast_onto_surface(LANDMARKS_XY, vertices, triangles)
    shift = np.asarray(MEAN_SHAPE_CENTER) - vertices[front_idx].mean(axis=0)
    vertices, landmarks = vertices + shift, landmarks + shift
    distance = np.linalg.norm(landmarks[:, None] - vertices[front_idx][None], axis=2)
    keypoints = front_idx[distance.argmin(axis=1)]

    fields = _smooth_fields(lon_deg / LONGITUDE_RANGE_DEG, lat_deg / LATITUDE_RANGE_DEG)
    expression_region = front * (0.4 + 0.6 * _gauss(x, y, 0.0, -0.45, 0.35, 0.3))
    id_base = _random_basis(rng, fields, ID_DIMS, ID_AMPLITUDE)
    exp_base = _random_basis(rng, fields, EXP_DIMS, EXP_AMPLITUDE, expression_region)
    tex_base = _random_basis(rng, fields, TEX_DIMS, TEX_AMPLITUDE)

    span = 0.5 - UV_MARGIN
    uv = np.stack([0.5 + span * lon_deg / LONGITUDE_RANGE_DEG, 0.5 + span * lat_deg / LATITUDE_RANGE_DEG], axis=1)
    return SyntheticHead(mean_shape=vertices, mean_tex=_mean_texture(x, y, front), id_base=id_base,
                         exp_base=exp_base, tex_base=tex_base, triangles=triangles, uv=uv, front_idx=front_idx,
                         front_triangles=front_triangles, landmarks=landmarks, keypoints=keypoints)


def save_mat(path: Path, content: dict[str, np.ndarray]) -> None:
    """`scipy.io.savemat` with a fixed header text instead of the creation date (reproducible bytes)."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, content)
    data = bytearray(buffer.getvalue())
    data[:116] = MAT_HEADER.ljust(116, b" ")[:116]
    path.write_bytes(bytes(data))


def _model_content(head: SyntheticHead, vertices: np.ndarray, triangles: np.ndarray, point_buf: np.ndarray,
                   keypoints: np.ndarray) -> dict[str, np.ndarray]:
    rows = (3 * vertices[:, None] + np.arange(3)).ravel()
    return {
        "meanshape": head.mean_shape[vertices].reshape(1, -1).astype(np.float32),
        "meantex": head.mean_tex[vertices].reshape(1, -1).astype(np.float32),
        "idBase": head.id_base[rows].astype(np.float32),
        "exBase": head.exp_base[rows].astype(np.float32),
        "texBase": head.tex_base[rows].astype(np.float32),
        "tri": (triangles + 1).astype(np.int32),  # 1-based in both files
        "point_buf": point_buf.astype(np.int32),
        "keypoints": (keypoints + 1).reshape(1, -1).astype(np.int32),  # 1-based
    }


def write_bfm_folder(folder: str | Path, head: SyntheticHead | None = None, *, seed: int = 0,
                     uv_tables: bool = False, uv_table_size: int = 256, front_mask: bool = False) -> Path:
    """Writes `head` (default: `synthetic_head(seed)`) as the official BFM files; returns the folder.

    Index bases as the official code reads them (trap 2): the whole head's `tri` 1-based and
    `point_buf` 0-based padded with F; `example1.mat['full_triangles']` 0-based; the front model's
    `tri` and `point_buf` 1-based (padded with F + 1); `BFM_front_idx.mat['idx']` 1-based.
    `uv_tables=True` adds `triangle_buffer.npy` / `barycentric_weight.npy` (uv_table_size^2),
    rasterised by `uvidm_backend.geometry.uv_tables`. `front_mask=True` adds a `front_mask.png`
    (256 x 256, white inside): the ellipse inscribed in the UV box of the front vertices, a drawn
    mask smaller than their footprint, like the official `masktopo/front.png`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = head or synthetic_head(seed)
    n = head.n_vertices
    everything = np.arange(n)
    save_mat(folder / bfm_files.FULL_MODEL_FILE,
             _model_content(head, everything, head.triangles, point_buffer(head.triangles, n), head.keypoints))
    save_mat(folder / bfm_files.FULL_TRIANGLES_FILE, {"full_triangles": head.triangles.astype(np.int32)})

    position = np.full(n, -1, dtype=np.int64)
    position[head.front_idx] = np.arange(head.front_idx.size)
    front_point_buf = point_buffer(head.front_triangles, head.front_idx.size) + 1
    save_mat(folder / bfm_files.FRONT_MODEL_FILE,
             _model_content(head, head.front_idx, head.front_triangles, front_point_buf, position[head.keypoints]))
    save_mat(folder / bfm_files.FRONT_INDEX_FILE, {"idx": (head.front_idx + 1).reshape(-1, 1).astype(np.int32)})
    np.save(folder / bfm_files.UV_FILE, head.uv.astype(np.float64))
    save_mat(folder / bfm_files.LANDMARKS_FILE, {"lm": head.landmarks.astype(np.float64)})

    if uv_tables:
        from uvidm_backend.geometry.uv_tables import uv_lookup_tables

        buffer, weight = uv_lookup_tables(head.uv, head.triangles, uv_table_size)
        np.save(folder / bfm_files.TRIANGLE_BUFFER_FILE, buffer.cpu().numpy().astype(np.int64))
        np.save(folder / bfm_files.BARYCENTRIC_WEIGHT_FILE, weight.cpu().numpy().astype(np.float32))
    if front_mask:
        _write_front_mask(folder / bfm_files.FRONT_MASK_FILE, head)
    return folder


def _write_front_mask(path: Path, head: SyntheticHead, size: int = 256) -> None:
    from PIL import Image

    x = head.uv[head.front_idx, 0] * (size - 1)
    y = size - 1 - head.uv[head.front_idx, 1] * (size - 1)  # process_uv's rows, from the top
    centre, radius = np.array([x.min() + x.max(), y.min() + y.max()]) / 2, np.array([np.ptp(x), np.ptp(y)]) / 2
    rows, cols = np.mgrid[:size, :size]
    inside = ((cols - centre[0]) / radius[0]) ** 2 + ((rows - centre[1]) / radius[1]) ** 2 < 1
    Image.fromarray(np.repeat((inside * 255).astype(np.uint8)[..., None], 3, axis=-1)).save(path)

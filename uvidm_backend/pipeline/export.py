"""File formats of a finished head: binary glTF 2.0 (.glb) and Wavefront OBJ + MTL.

The official UV-IDM code saves per-vertex colours only; a game asset needs UVs and a texture, so
this stage has no official counterpart. Conventions follow glTF 2.0 (metres, +Y up, the face
looking towards +Z, counter-clockwise front faces), which is also what Blender's OBJ importer
expects with its default axes (forward -Z, up Y). UVs are kept with v up (OBJ and Blender); the
glTF writer flips v because glTF puts the texture origin at the top left.
One writer per format: the BFM head (`TexturedMesh`) is written as a `MorphedMesh` of one part without
morph targets, the full head as one of several parts and materials with its shape keys.
Every file is written under a temporary name and `os.replace`d into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from uvidm_backend.pipeline.float_text import float_rows
from uvidm_backend.pipeline.output_folder import write_bytes, write_png
from uvidm_backend.pipeline.png import encode_png

log = logging.getLogger(__name__)

# One material for skin: not metallic, moderately rough.
METALLIC = 0.0
ROUGHNESS = 0.6
SPECULAR_COLOR = 0.1

_FLOAT = "%.9g"  # 9 significant digits: every float32 reads back bit-exact
_WHITESPACE = re.compile(r"\s+")
_NOT_A_TOKEN = re.compile(r"[\s#]+")  # whitespace splits an OBJ line, "#" starts a comment
_LINES_PER_BLOCK = 2048  # about 2 ms of formatting
_TOPOLOGY_CACHE_SIZE = 24  # formatted face/UV texts kept (a few MB each for the BFM head, 16 small for the full head)
_TOPOLOGY_ROWS: dict[tuple, bytes] = {}
_FACE_ROWS: dict[tuple[int, int], tuple[np.ndarray, bytes]] = {}
_TOPOLOGY_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class TexturedMesh:
    """A head ready for export: N vertices in metres, F triangles, one base-colour texture.

    vertices (N, 3) float32, metres, +Y up, face towards +Z; faces (F, 3) vertex indices,
    counter-clockwise seen from outside; uv (N, 2) per vertex in [0, 1], v up (row 0 of the
    texture is v = 1); normals (N, 3) per vertex (written unit length); texture (H, W, 3) uint8
    RGB base colour, row 0 at the top; name names the node, the mesh and (with "_skin") the
    material. The arrays are copied and made read-only (read-only ones are kept as they are).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    normals: np.ndarray
    texture: np.ndarray
    name: str = "head"

    def __post_init__(self) -> None:
        vertices = _frozen(self.vertices, np.float32, "vertices", (None, 3))
        count = len(vertices)
        faces_in = np.asarray(self.faces)
        if faces_in.dtype.kind not in "iu":
            raise ValueError(f"faces must be integer vertex indices (got {faces_in.dtype})")
        faces = _frozen(faces_in, np.int64, "faces", (None, 3))
        uv = _frozen(self.uv, np.float32, "uv", (count, 2))
        normals = _frozen(self.normals, np.float32, "normals", (count, 3))
        texture = np.asanyarray(self.texture)  # an image in shared memory stays one (`writers`)
        if texture.dtype != np.uint8:
            raise ValueError(f"texture must be uint8 RGB (got {texture.dtype})")
        texture = _frozen(texture, np.uint8, "texture", (None, None, 3))
        if count == 0 or len(faces) == 0:
            raise ValueError("a mesh needs at least one vertex and one face")
        if faces.min() < 0 or faces.max() >= count:
            raise ValueError(f"face indices must lie in [0, {count - 1}] (got {faces.min()}..{faces.max()})")
        for what, array in (("vertices", vertices), ("uv", uv), ("normals", normals)):
            if not np.isfinite(array).all():
                raise ValueError(f"{what} contain NaN or infinity")
        if texture.shape[0] == 0 or texture.shape[1] == 0:
            raise ValueError("texture is empty")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("a mesh needs a non-empty name")
        for field, value in (("vertices", vertices), ("faces", faces), ("uv", uv), ("normals", normals)):
            object.__setattr__(self, field, value)
        object.__setattr__(self, "texture", texture)

    @property
    def material_name(self) -> str:
        return f"{self.name}_skin"

    def unit_normals(self) -> np.ndarray:
        return _unit(self.normals)

    def as_morphed(self) -> MorphedMesh:
        """The same head as a mesh of one part, one material and no morph targets."""
        part = MeshPart(0, self.vertices, self.normals, self.uv, self.faces,
                        MorphTargets.from_dense(np.zeros((0, len(self.vertices), 3), np.float32)))
        return MorphedMesh(self.name, (part,), (Material(self.material_name, texture=self.texture),))


def _unit(normals: np.ndarray) -> np.ndarray:
    """Normals scaled to unit length (glTF requires it); zero vectors stay zero."""
    length = np.linalg.norm(normals.astype(np.float64), axis=1, keepdims=True)
    return (normals / np.where(length > 0.0, length, 1.0)).astype(np.float32)


def _frozen(value: object, dtype: type, what: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """`value` as a read-only C-contiguous array of `dtype` and `shape`: a copy, unless it is one already
    (the faces and UVs that every head of a model shares are not copied per head)."""
    if (isinstance(value, np.ndarray) and value.dtype == dtype and value.flags.c_contiguous
            and not value.flags.writeable):
        array = value
    else:
        array = np.array(value, dtype=dtype, copy=True, order="C")
    if array.ndim != len(shape) or any(want not in (None, have) for have, want in zip(array.shape, shape, strict=True)):
        wanted = "(" + ", ".join("?" if want is None else str(want) for want in shape) + ")"
        raise ValueError(f"{what} must have shape {wanted} (got {array.shape})")
    array.setflags(write=False)
    return array


GLTF_FLOAT = 5126
GLTF_UINT16 = 5123
GLTF_UINT32 = 5125
GLTF_ARRAY_BUFFER = 34962
GLTF_ELEMENT_ARRAY_BUFFER = 34963


def glb_bytes(mesh: TexturedMesh, png: bytes | None = None) -> bytes:
    """Binary glTF 2.0: one node and mesh named `mesh.name`, one PBR material with the embedded PNG
    (`morphed_glb_bytes` of the mesh as one part without morph targets).

    `png`: the texture already encoded (albedo.png's bytes), so that it is encoded once for every file; vertex
    order and count are kept exactly (seam vertices that share a position but not a UV stay apart);
    TEXCOORD_0 holds (u, 1 - v).
    """
    return morphed_glb_bytes(mesh.as_morphed(), None if png is None else {0: png})


def write_glb(mesh: TexturedMesh, path: str | os.PathLike[str], png: bytes | None = None) -> Path:
    """Writes `glb_bytes(mesh, png)` atomically."""
    data = glb_bytes(mesh, png)
    log.debug("glTF: %d vertices, %d faces, %d bytes", len(mesh.vertices), len(mesh.faces), len(data))
    return write_bytes(data, path)


def _relative_reference(name: str, what: str, allow_folders: bool) -> str:
    """A file reference an OBJ/MTL line can hold: relative, forward slashes, no whitespace."""
    if not name or _WHITESPACE.search(name) or "\\" in name:
        raise ValueError(f"{what} must be a relative file name without spaces or backslashes (got {name!r})")
    posix = PurePosixPath(name)
    if posix.is_absolute() or ".." in posix.parts or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"{what} must be relative to the OBJ file's folder (got {name!r})")
    if not allow_folders and len(posix.parts) != 1:
        raise ValueError(f"{what} must be a file name in the OBJ file's folder (got {name!r})")
    return name


def _obj_token(name: str) -> str:
    """Object and material names are one token in OBJ/MTL: no whitespace, no comment sign."""
    return _NOT_A_TOKEN.sub("_", name.strip())


def _rows(array: np.ndarray, fmt: str) -> bytes:
    """One line per row of `array`, formatted by `fmt` (which carries the line's keyword).

    The text of `np.savetxt`, three times faster: one `%` formats a block of lines at once. Blocks
    stay small so that threads writing other files get the GIL in between. For text made once per process
    (`_topology_rows`); a head's own floats go through `float_text.float_rows`, which leaves the GIL free.
    """
    if array.dtype.kind == "f":
        array = array + 0.0  # turns -0 into 0, which reads the same and looks less odd
    line = fmt + "\n"
    blocks = [array[start:start + _LINES_PER_BLOCK] for start in range(0, len(array), _LINES_PER_BLOCK)]
    return b"".join((line * len(block) % tuple(block.ravel().tolist())).encode() for block in blocks)


def _topology_rows(array: np.ndarray, fmt: str) -> bytes:
    """`_rows` for arrays that are the same for every head (faces, UVs): formatted once per process.

    Keyed by content, so a different mesh gets its own text; hashing costs ~1 ms where the formatting
    of the BFM head's faces costs tens.
    """
    digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).digest()
    key = (fmt, array.dtype.str, array.shape, digest)
    with _TOPOLOGY_LOCK:
        cached = _TOPOLOGY_ROWS.get(key)
    if cached is None:
        cached = _rows(array, fmt)
        with _TOPOLOGY_LOCK:
            _TOPOLOGY_ROWS[key] = cached
            while len(_TOPOLOGY_ROWS) > _TOPOLOGY_CACHE_SIZE:
                _TOPOLOGY_ROWS.pop(next(iter(_TOPOLOGY_ROWS)))
    return cached


def _face_rows(faces: np.ndarray, offset: int) -> bytes:
    """`f v/vt/vn ...` lines of `faces` (0-based) counted from `offset` (v, vt and vn share the index).

    A read-only array (the faces every head of a model shares) is looked up by identity first: hashing and
    repeating its indices per head would cost more than the lookup saves.
    """
    shared = not faces.flags.writeable
    key = (id(faces), offset)
    if shared:
        with _TOPOLOGY_LOCK:
            hit = _FACE_ROWS.get(key)
        if hit is not None and hit[0] is faces:
            return hit[1]
    text = _topology_rows(np.repeat(faces + offset, 3, axis=1), "f %d/%d/%d %d/%d/%d %d/%d/%d")
    if shared:
        with _TOPOLOGY_LOCK:
            _FACE_ROWS[key] = (faces, text)  # holding `faces` keeps its id from being reused
            while len(_FACE_ROWS) > _TOPOLOGY_CACHE_SIZE:
                _FACE_ROWS.pop(next(iter(_FACE_ROWS)))
    return text


def write_obj(
    mesh: TexturedMesh,
    obj_path: str | os.PathLike[str],
    mtl_name: str,
    texture_name: str,
    *,
    write_texture: bool = False,
) -> tuple[Path, Path]:
    """Wavefront OBJ (`v`, `vt`, `vn`, `f v/vt/vn`) and its MTL, next to each other.

    `mtl_name` is a file name in the OBJ's folder; `texture_name` is the texture's path relative
    to it (`map_Kd`). The texture itself is written only with `write_texture=True` (the pipeline
    usually writes it once for all formats). Floats carry 9 significant digits (float32 exact).
    Returns the OBJ and MTL paths.
    """
    return write_morphed_obj(mesh.as_morphed(), obj_path, mtl_name, texture_names={0: texture_name},
                             write_textures=write_texture)


# -- meshes of parts, one material each, with morph targets (the full head; the BFM head is one part) --


@dataclass(frozen=True, eq=False)
class Material:
    """A PBR material: a base colour texture (H, W, 3) uint8 or a plain colour (RGBA in 0..1, linear)."""

    name: str
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = None
    roughness: float = ROUGHNESS
    blend: bool = False  # alpha-blended (lashes); otherwise opaque
    double_sided: bool = False


@dataclass(frozen=True, eq=False)
class MorphTargets:
    """E morph targets of N vertices, kept as what moves: target e moves vertices
    `rows[starts[e]:starts[e + 1]]` (increasing) by `offsets[starts[e]:starts[e + 1]]` (float32), the
    others not at all. Most shapes of a face move a part of it, so this is smaller and faster to
    transform and to write than (E, N, 3)."""

    count: int  # N
    starts: np.ndarray  # (E + 1,) int64
    rows: np.ndarray  # (total,) int64
    offsets: np.ndarray  # (total, 3) float32

    @classmethod
    def from_dense(cls, targets: np.ndarray) -> MorphTargets:
        """From (E, N, 3) offsets; a vertex moves where any of its three offsets is not 0."""
        targets = np.asarray(targets, np.float32)
        if targets.ndim != 3 or targets.shape[2] != 3:
            raise ValueError(f"targets must have shape (E, N, 3) (got {targets.shape})")
        which, rows = np.nonzero(np.any(targets != 0.0, axis=2))
        starts = np.searchsorted(which, np.arange(len(targets) + 1))
        return cls(targets.shape[1], starts.astype(np.int64), rows.astype(np.int64), targets[which, rows])

    def __post_init__(self) -> None:
        # Read-only arrays are kept as they are (the targets of every head share their rows), others copied.
        for name, dtype, shape in (("starts", np.int64, (None,)), ("rows", np.int64, (None,)),
                                   ("offsets", np.float32, (len(self.rows), 3))):
            value = getattr(self, name)
            if not (isinstance(value, np.ndarray) and not value.flags.writeable and value.dtype == dtype
                    and value.flags.c_contiguous):
                value = _frozen(value, dtype, name, shape)
            object.__setattr__(self, name, value)
        if self.starts.ndim != 1 or self.rows.ndim != 1 or self.offsets.shape != (len(self.rows), 3):
            raise ValueError(f"starts and rows must be vectors and offsets (rows, 3) (got {self.offsets.shape})")
        starts = self.starts
        if len(starts) == 0 or starts[0] != 0 or starts[-1] != len(self.rows) or np.any(np.diff(starts) < 0):
            raise ValueError("starts must rise from 0 to the number of moving rows")
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= self.count):
            raise ValueError(f"moving rows must lie in [0, {self.count - 1}]")

    def __len__(self) -> int:
        return len(self.starts) - 1

    def target(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, offsets) of one target."""
        span = slice(self.starts[index], self.starts[index + 1])
        return self.rows[span], self.offsets[span]

    def dense(self) -> np.ndarray:
        """(E, N, 3) float32."""
        out = np.zeros((len(self), self.count, 3), np.float32)
        out[np.repeat(np.arange(len(self)), np.diff(self.starts)), self.rows] = self.offsets
        return out

    def transformed(self, matrix: np.ndarray) -> MorphTargets:
        """Each offset o replaced by o @ matrix (3, 3): the same vertices move (matrix invertible)."""
        offsets = self.offsets @ np.asarray(matrix, np.float32)
        offsets.setflags(write=False)
        return MorphTargets(self.count, self.starts, self.rows, offsets)

    def applied(self, weights: np.ndarray) -> np.ndarray:
        """(N, 3) float32: the sum of the targets at `weights` (E,)."""
        weights = np.asarray(weights, np.float32)
        if not weights.any():
            return np.zeros((self.count, 3), np.float32)
        # One weighted sum per axis over every moving row of every target (bincount adds in float64).
        scaled = self.offsets * np.repeat(weights, np.diff(self.starts))[:, None]
        return np.stack([np.bincount(self.rows, scaled[:, axis], self.count) for axis in range(3)],
                        axis=1).astype(np.float32)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(E, 3) minimum and maximum of each target's offsets over all N vertices (0 for those that stay)."""
        lows, highs = np.zeros((len(self), 3), np.float32), np.zeros((len(self), 3), np.float32)
        counts = np.diff(self.starts)
        some = np.flatnonzero(counts > 0)
        if len(some):
            lows[some] = np.minimum.reduceat(self.offsets, self.starts[some], axis=0)
            highs[some] = np.maximum.reduceat(self.offsets, self.starts[some], axis=0)
            every = counts == self.count  # no vertex stays: 0 is not among the offsets
            np.minimum(lows, 0.0, out=lows, where=~every[:, None])
            np.maximum(highs, 0.0, out=highs, where=~every[:, None])
        return lows, highs


@dataclass(frozen=True, eq=False)
class MeshPart:
    """One material's share of a mesh: its own vertices (metres), normals, UVs (v up) and triangles;
    `targets` are the morph targets' position offsets in metres (`MorphTargets`, or (E, N, 3) offsets);
    `posed`: the vertices with the targets applied at the mesh's weights, where the maker has them already
    (None: `MorphedMesh.posed_vertices` sums the targets)."""

    material: int
    vertices: np.ndarray
    normals: np.ndarray
    uv: np.ndarray
    faces: np.ndarray
    targets: MorphTargets
    posed: np.ndarray | None = None

    def __post_init__(self) -> None:
        vertices = _frozen(self.vertices, np.float32, "vertices", (None, 3))
        count = len(vertices)
        object.__setattr__(self, "vertices", vertices)
        if self.posed is not None:
            object.__setattr__(self, "posed", _frozen(self.posed, np.float32, "posed", (count, 3)))
        object.__setattr__(self, "normals", _frozen(self.normals, np.float32, "normals", (count, 3)))
        object.__setattr__(self, "uv", _frozen(self.uv, np.float32, "uv", (count, 2)))
        faces = _frozen(self.faces, np.int64, "faces", (None, 3))
        if len(faces) == 0 or faces.min() < 0 or faces.max() >= count:
            raise ValueError(f"a part needs faces with indices in [0, {count - 1}]")
        object.__setattr__(self, "faces", faces)
        targets = self.targets
        if not isinstance(targets, MorphTargets):
            targets = MorphTargets.from_dense(_frozen(targets, np.float32, "targets", (None, count, 3)))
        if targets.count != count:
            raise ValueError(f"the morph targets are of {targets.count} vertices, the part has {count}")
        object.__setattr__(self, "targets", targets)

    def unit_normals(self) -> np.ndarray:
        return _unit(self.normals)


@dataclass(frozen=True, eq=False)
class MorphedMesh:
    """A mesh of several parts (one material each) sharing named morph targets and their weights."""

    name: str
    parts: tuple[MeshPart, ...]
    materials: tuple[Material, ...]
    target_names: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a mesh needs at least one part")
        for part in self.parts:
            if len(part.targets) != len(self.target_names):
                raise ValueError(f"each part needs {len(self.target_names)} morph targets (got {len(part.targets)})")
            if not 0 <= part.material < len(self.materials):
                raise ValueError(f"part material {part.material} is not one of the {len(self.materials)} materials")
        if self.weights and len(self.weights) != len(self.target_names):
            raise ValueError("one weight per morph target")

    def posed_vertices(self, part: MeshPart) -> np.ndarray:
        """The part's vertices with the morph targets applied at `weights`."""
        if not self.weights:
            return part.vertices
        if part.posed is not None:
            return part.posed
        return part.vertices + part.targets.applied(np.asarray(self.weights, np.float32))


SPARSE_SHARE = 0.75  # a target with fewer moving vertices than this share is stored sparse (smaller)


class _GLBWriter:
    """Buffer views and accessors of one binary glTF, appended as they come; the binary chunk's pieces are
    joined once, into the file."""

    def __init__(self):
        self.pieces: list[bytes | memoryview] = []
        self.length = 0
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def view(self, raw: bytes | memoryview, target: int | None = None) -> int:
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.views.append(view)
        padding = -len(raw) % 4
        self.pieces += [raw, b"\0" * padding]
        self.length += len(raw) + padding
        return len(self.views) - 1

    def accessor(self, data: np.ndarray, kind: str, target: int | None, bounds: bool = False) -> int:
        component = GLTF_UINT32 if data.dtype.kind in "iu" else GLTF_FLOAT
        data = np.ascontiguousarray(data, "<u4" if component == GLTF_UINT32 else "<f4")
        accessor = {"bufferView": self.view(_raw(data), target),
                    "componentType": component, "type": kind, "count": int(data.shape[0])}
        if bounds:
            accessor["min"], accessor["max"] = data.min(axis=0).tolist(), data.max(axis=0).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def targets(self, targets: MorphTargets) -> list[int]:
        """The morph targets' POSITION accessors: sparse when few vertices move, no data at all when none do."""
        lows, highs = targets.bounds()
        small = targets.count <= 65535
        # Every target's indices and offsets converted at once; each target's share is a slice of them.
        all_rows = _raw(np.ascontiguousarray(targets.rows, "<u2" if small else "<u4"))
        all_offsets = _raw(np.ascontiguousarray(targets.offsets, "<f4"))
        row_bytes, offset_bytes = (2 if small else 4), 12
        indices = []
        for index in range(len(targets)):
            start, stop = int(targets.starts[index]), int(targets.starts[index + 1])
            accessor = {"componentType": GLTF_FLOAT, "type": "VEC3", "count": int(targets.count),
                        "min": lows[index].tolist(), "max": highs[index].tolist()}
            if stop == start:
                pass  # an accessor without a buffer view reads as zeros
            elif stop - start < SPARSE_SHARE * targets.count:
                accessor["sparse"] = {
                    "count": stop - start,
                    "indices": {"bufferView": self.view(all_rows[start * row_bytes:stop * row_bytes]),
                                "componentType": GLTF_UINT16 if small else GLTF_UINT32},
                    "values": {"bufferView": self.view(all_offsets[start * offset_bytes:stop * offset_bytes])}}
            else:
                rows, offsets = targets.target(index)
                dense = np.zeros((targets.count, 3), "<f4")
                dense[rows] = offsets
                accessor["bufferView"] = self.view(_raw(dense), GLTF_ARRAY_BUFFER)
            self.accessors.append(accessor)
            indices.append(len(self.accessors) - 1)
        return indices


def _raw(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return memoryview(array.reshape(-1).view(np.uint8))


def morphed_glb_bytes(mesh: MorphedMesh, pngs: dict[int, bytes] | None = None) -> bytes:
    """Binary glTF 2.0: one node and mesh, a primitive per part, morph targets named in `mesh.extras.targetNames`
    (the convention of Blender, three.js and Babylon), `mesh.weights` the targets' default weights.
    `pngs`: textures already encoded, by material index."""
    pngs = pngs or {}
    writer = _GLBWriter()
    primitives = []
    for part in mesh.parts:
        uv = np.column_stack([part.uv[:, 0], 1.0 - part.uv[:, 1]])
        primitive = {
            "attributes": {"POSITION": writer.accessor(part.vertices, "VEC3", GLTF_ARRAY_BUFFER, bounds=True),
                           "NORMAL": writer.accessor(part.unit_normals(), "VEC3", GLTF_ARRAY_BUFFER)},
            "indices": writer.accessor(part.faces.reshape(-1), "SCALAR", GLTF_ELEMENT_ARRAY_BUFFER),
            "material": part.material, "mode": 4}
        if mesh.materials[part.material].texture is not None:  # UVs only where a texture reads them
            primitive["attributes"]["TEXCOORD_0"] = writer.accessor(uv, "VEC2", GLTF_ARRAY_BUFFER)
        if mesh.target_names:
            primitive["targets"] = [{"POSITION": accessor} for accessor in writer.targets(part.targets)]
        primitives.append(primitive)
    materials, textures, images = [], [], []
    for index, material in enumerate(mesh.materials):
        pbr: dict = {"metallicFactor": float(METALLIC), "roughnessFactor": float(material.roughness)}
        if material.texture is not None:
            png = pngs.get(index) or encode_png(material.texture)
            images.append({"bufferView": writer.view(png), "mimeType": "image/png"})
            textures.append({"source": len(images) - 1, "sampler": 0})
            pbr["baseColorTexture"] = {"index": len(textures) - 1, "texCoord": 0}
        if tuple(material.base_color) != (1.0, 1.0, 1.0, 1.0):
            pbr["baseColorFactor"] = [float(c) for c in material.base_color]
        entry = {"name": material.name, "doubleSided": material.double_sided, "pbrMetallicRoughness": pbr}
        if material.blend:
            entry["alphaMode"] = "BLEND"
        materials.append(entry)
    gltf_mesh: dict = {"name": mesh.name, "primitives": primitives}
    if mesh.target_names:
        gltf_mesh["extras"] = {"targetNames": list(mesh.target_names)}
        gltf_mesh["weights"] = [float(w) for w in (mesh.weights or [0.0] * len(mesh.target_names))]
    tree = {
        "asset": {"version": "2.0", "generator": "uvidm"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": mesh.name, "mesh": 0}],
        "meshes": [gltf_mesh],
        "materials": materials,
        "accessors": writer.accessors,
        "bufferViews": writer.views,
        "buffers": [{"byteLength": writer.length}],
    }
    if textures:
        tree.update(textures=textures, images=images,
                    samplers=[{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}])
    text = json.dumps(tree, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + writer.length
    return b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(text), b"JSON"), text,
                     struct.pack("<I4s", writer.length, b"BIN\0"), *writer.pieces])


def texture_file_name(material: Material) -> str:
    """The PNG of a textured material beside the OBJ (material names carry the head's name)."""
    return f"{_obj_token(material.name)}.png"


def write_morphed_obj(mesh: MorphedMesh, obj_path: str | os.PathLike[str], mtl_name: str, *,
                      texture_names: dict[int, str] | None = None, write_textures: bool = True) -> tuple[Path, Path]:
    """Wavefront OBJ + MTL of the posed mesh (morph targets applied at their weights: OBJ has no shape keys),
    a `usemtl` group per part. Each textured material's PNG is `texture_names[material index]` (a path relative
    to the OBJ's folder), by default `<material name>.png` beside the OBJ, and is written there unless
    `write_textures=False` (the caller writes it). Returns the OBJ and MTL paths."""
    obj_path = Path(obj_path)
    mtl_name = _relative_reference(mtl_name, "mtl_name", allow_folders=False)
    textures = {index: texture_file_name(material) for index, material in enumerate(mesh.materials)
                if material.texture is not None}
    textures.update((index, _relative_reference(name, "texture_name", allow_folders=True))
                    for index, name in (texture_names or {}).items() if index in textures)
    lines = ["# UV-IDM for Blender"]
    for index, material in enumerate(mesh.materials):
        r, g, b, alpha = material.base_color
        # Blender's OBJ importer maps Ns to roughness = 1 - sqrt(Ns / 1000): Ns gives the material's roughness.
        lines += [f"newmtl {_obj_token(material.name)}", "Ka 0 0 0", f"Kd {r:g} {g:g} {b:g}",
                  f"Ks {SPECULAR_COLOR:g} {SPECULAR_COLOR:g} {SPECULAR_COLOR:g}", "Ke 0 0 0",
                  f"Ns {(1.0 - material.roughness) ** 2 * 1000.0:g}", "Ni 1.45", f"d {alpha:g}", "illum 2",
                  f"Pr {material.roughness:g}", f"Pm {METALLIC:g}"]  # Pr, Pm: PBR, read by Blender's importer
        if index in textures:
            lines.append(f"map_Kd {textures[index]}")
    mtl = ("\n".join(lines) + "\n").encode()
    body = [f"# UV-IDM for Blender: metres, +Y up, face towards +Z\nmtllib {mtl_name}\no {_obj_token(mesh.name)}\n"
            .encode()]
    offset = 1  # OBJ counts from 1
    for part in mesh.parts:
        body += [float_rows(mesh.posed_vertices(part), "v"),
                 _topology_rows(part.uv, f"vt {_FLOAT} {_FLOAT}"),
                 float_rows(part.unit_normals(), "vn"),
                 f"usemtl {_obj_token(mesh.materials[part.material].name)}\ns off\n".encode(),
                 _face_rows(part.faces, offset)]
        offset += len(part.vertices)
    for index, name in textures.items() if write_textures else ():
        path = obj_path.parent / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(mesh.materials[index].texture, path)
    # Textures, then the MTL, then the OBJ: no file ever points at one that is missing.
    mtl_path = write_bytes(mtl, obj_path.parent / mtl_name)
    write_bytes(b"".join(body), obj_path)
    log.debug("OBJ: %d parts, %d vertices -> %s", len(mesh.parts), offset - 1, obj_path)
    return obj_path, mtl_path

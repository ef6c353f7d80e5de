"""A small synthetic head in the ICT FaceKit file layout, for tests and trying `--head full`.

The real ICT FaceKit files are downloaded by users, never shipped; this writes a stand-in folder that
`uvidm_backend.fullhead.ict_files` reads unchanged: `generic_neutral_mesh.obj` (positions in cm, +Y up,
face towards +Z; `vt` UVs in the ICT tiles: face in u 0..1, back of the head 1..2, gums 2..3, teeth 3..4,
lashes 6..7, eyes 0..1 each; `usemtl` groups with the ICT material names; quads and triangles, 1-based
`v/vt` corners, counter-clockwise from outside), `identity000.obj`..., one OBJ per expression of
`vertex_indices.json["expressions"]` (all 53 ARKit-style names, each a smooth localised deformation),
and `vertex_indices.json` (68 landmark vertices at iBUG places, fitting and rigid vertex sets).

The skin is one closed shell (latitude -75 deg at the neck cut up to a pole at the crown; longitude all
around, with a UV seam at the back): its only boundary is the neck cut. The face vertices come first,
as in the real model. Eyeballs (sclera + iris), gums, teeth and lash strips are small separate meshes.
About 1,900 vertices: the whole full-head path runs in a fraction of a second on a CPU.

Command line: `python -m uvidm_backend.devtools.ict_fixture OUT_DIR [--seed N]`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from uvidm_backend.devtools.synthetic_head import LANDMARKS_XY, SEMI_AXES, _gauss, _relief, _smoothstep

CM_PER_BFM_UNIT = 10.0
STEP_DEG = 7.5
NECK_LATITUDE_DEG = -75.0
FACE_LONGITUDE_DEG, FACE_LATITUDE_DEG = 75.0, (-60.0, 60.0)
IDENTITY_COUNT = 8
IDENTITY_AMPLITUDE_CM = 0.3
EXPRESSION_AMPLITUDE_CM = 0.4
EYE_CENTRES_CM = ((-3.1, 2.2), (3.1, 2.2))  # (x, y) of the eye sockets, from the synthetic BFM's relief
EYEBALL_RADIUS_CM = 1.2

EXPRESSIONS = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R", "jawForward",
    "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R", "mouthFrown_L",
    "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R", "mouthPress_L",
    "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R", "mouthUpperUp_L",
    "mouthUpperUp_R", "noseSneer_L", "noseSneer_R")

# Where each expression family moves the face: (x, y) centre in cm for the left side (_L is the subject's
# left, +x), radius in cm, direction.
_REGIONS = {"brow": ((3.0, 3.6), 1.6, (0, 1, 0)), "cheek": ((3.5, -1.5), 2.0, (0, 0, 1)),
            "eye": ((3.1, 2.2), 1.0, (0, -1, 0)), "jaw": ((0.0, -7.0), 3.5, (0, -1, 0)),
            "mouth": ((1.8, -5.0), 1.8, (1, 0, 0)), "nose": ((1.0, -0.5), 1.0, (0, 1, 0))}


def _family(name: str) -> str:
    for family in ("brow", "cheek", "eye", "jaw", "mouth", "nose"):
        if name.startswith(family):
            return family
    raise ValueError(name)


def _grid(step: float):
    """The skin shell: latitude rings from the neck cut to just below the crown, a pole on top."""
    latitudes = np.arange(NECK_LATITUDE_DEG, 90.0 - step / 2, step)
    longitudes = np.arange(-180.0, 180.0, step)  # the ring wraps: vertex at -180 is also +180
    lat, lon = np.meshgrid(latitudes, longitudes, indexing="ij")
    return latitudes, longitudes, lat.ravel(), lon.ravel()


def _shell_positions(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    lat, lon = np.deg2rad(lat_deg), np.deg2rad(lon_deg)
    a, b, c = SEMI_AXES
    x, y, z = a * np.cos(lat) * np.sin(lon), b * np.sin(lat), c * np.cos(lat) * np.cos(lon)
    front = _smoothstep(z / c, 0.35, 0.75)
    z = z + front * _relief(x, y)
    return np.stack([x, y, z], axis=1) * CM_PER_BFM_UNIT


def _sphere(centre: np.ndarray, radius: float, rings: int = 8, segments: int = 12):
    """A closed UV sphere facing +z: (vertices, uv, quads/triangles as vertex lists, iris flag per face)."""
    vertices, uv = [centre + [0.0, 0.0, radius]], [(0.5, 0.5)]
    for ring in range(1, rings):
        theta = math.pi * ring / rings
        for seg in range(segments):
            phi = 2 * math.pi * seg / segments
            vertices.append(centre + radius * np.array([math.sin(theta) * math.cos(phi),
                                                        math.sin(theta) * math.sin(phi), math.cos(theta)]))
            uv.append((0.5 + 0.45 * ring / rings * math.cos(phi), 0.5 + 0.45 * ring / rings * math.sin(phi)))
    vertices.append(centre - [0.0, 0.0, radius])
    uv.append((0.95, 0.5))
    last = len(vertices) - 1
    faces, iris = [], []

    def ring_index(ring: int, seg: int) -> int:
        return 1 + (ring - 1) * segments + seg % segments

    for seg in range(segments):
        faces.append([0, ring_index(1, seg), ring_index(1, seg + 1)])
        iris.append(True)
    for ring in range(1, rings - 1):
        for seg in range(segments):
            faces.append([ring_index(ring, seg), ring_index(ring + 1, seg), ring_index(ring + 1, seg + 1),
                          ring_index(ring, seg + 1)])
            iris.append(ring < 2)
    for seg in range(segments):
        faces.append([last, ring_index(rings - 1, seg + 1), ring_index(rings - 1, seg)])
        iris.append(False)
    return np.array(vertices), np.array(uv), faces, iris


def _box(centre, size):
    """A closed box: 8 vertices, 6 outward quads."""
    offsets = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * 0.5
    vertices = np.asarray(centre) + offsets * np.asarray(size)
    faces = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    uv = np.column_stack([0.1 + 0.8 * (offsets[:, 0] + 0.5), 0.1 + 0.4 * (offsets[:, 1] + 0.5) +
                          0.4 * (offsets[:, 2] + 0.5)])
    return vertices, uv, faces


class _Builder:
    def __init__(self):
        self.vertices: list[np.ndarray] = []
        self.uv: list[tuple[float, float]] = []
        self.groups: dict[str, list[list[tuple[int, int]]]] = {}

    def add_vertices(self, positions: np.ndarray) -> int:
        start = len(self.vertices)
        self.vertices.extend(np.asarray(positions, float))
        return start

    def add_uv(self, u: float, v: float) -> int:
        self.uv.append((float(u), float(v)))
        return len(self.uv) - 1

    def face(self, material: str, corners: list[tuple[int, int]]) -> None:
        self.groups.setdefault(material, []).append(corners)


def build_fixture(seed: int = 0) -> tuple[np.ndarray, _Builder, dict, np.ndarray, np.ndarray]:
    """The neutral mesh, its identity and expression deltas and the index sets."""
    rng = np.random.default_rng(seed)
    latitudes, longitudes, lat, lon = _grid(STEP_DEG)
    n_lat, n_lon = len(latitudes), len(longitudes)
    positions = _shell_positions(lat, lon)
    is_face = (np.abs(lon) <= FACE_LONGITUDE_DEG) & (lat >= FACE_LATITUDE_DEG[0]) & (lat <= FACE_LATITUDE_DEG[1])
    # Face vertices first (ICT: the face is vertices 0..9408), then the rest of the shell, then the pole.
    order = np.concatenate([np.flatnonzero(is_face), np.flatnonzero(~is_face)])
    new_index = np.empty_like(order)
    new_index[order] = np.arange(len(order))
    builder = _Builder()
    builder.add_vertices(positions[order])
    pole = builder.add_vertices(np.array([[0.0, SEMI_AXES[1] * CM_PER_BFM_UNIT, 0.0]]))

    def grid_vertex(i_lat: int, i_lon: int) -> int:
        return int(new_index[i_lat * n_lon + i_lon % n_lon])

    uv_cache: dict[tuple[int, int, bool], int] = {}

    def grid_uv(i_lat: int, i_lon: int, face_tile: bool) -> int:
        key = (i_lat, i_lon, face_tile)
        if key not in uv_cache:
            t = (latitudes[i_lat] - NECK_LATITUDE_DEG) / (90.0 - NECK_LATITUDE_DEG)
            u = 0.02 + 0.96 * i_lon / n_lon  # i_lon == n_lon: the seam at the back gets its own UV
            uv_cache[key] = builder.add_uv(u if face_tile else 1.0 + u, 0.02 + 0.96 * t)
        return uv_cache[key]

    for i_lat in range(n_lat - 1):
        for i_lon in range(n_lon):
            cell = [(i_lat, i_lon), (i_lat, i_lon + 1), (i_lat + 1, i_lon + 1), (i_lat + 1, i_lon)]
            in_face = all(is_face[a * n_lon + b % n_lon] for a, b in cell)
            corners = [(grid_vertex(a, b), grid_uv(a, b, in_face)) for a, b in cell]
            builder.face("M_Face" if in_face else "M_BackHead", corners)
    pole_uv = builder.add_uv(1.5, 0.99)
    for i_lon in range(n_lon):
        a, b = (n_lat - 1, i_lon), (n_lat - 1, i_lon + 1)
        builder.face("M_BackHead", [(grid_vertex(*a), grid_uv(*a, False)), (grid_vertex(*b), grid_uv(*b, False)),
                                    (pole, pole_uv)])
    n_skin = len(builder.vertices)

    def add_part(material: str, vertices, uv, faces, tile: float) -> None:
        start = builder.add_vertices(vertices)
        uv_start = len(builder.uv)
        for u, v in uv:
            builder.add_uv(tile + u, v)
        for face in faces:
            builder.face(material, [(start + k, uv_start + k) for k in face])

    face_front = SEMI_AXES[2] * CM_PER_BFM_UNIT
    add_part("M_GumsTongue", *_box((0.0, -5.6, face_front - 3.0), (3.0, 0.8, 2.5)), tile=2.0)
    add_part("M_Teeth", *_box((0.0, -5.0, face_front - 2.2), (2.6, 0.5, 1.0)), tile=3.0)
    for side, (x, y) in zip("LR", EYE_CENTRES_CM, strict=True):
        name = "Left" if x > 0 else "Right"  # ICT's left eye is the subject's left (+x)
        del side
        z = float(_shell_positions(np.array([15.0]), np.array([math.degrees(math.asin(x / 7.5))]))[0, 2])
        vertices, uv, faces, iris = _sphere(np.array([x, y, z - EYEBALL_RADIUS_CM - 0.2]), EYEBALL_RADIUS_CM)
        start = builder.add_vertices(vertices)
        uv_start = len(builder.uv)
        for u, v in uv:
            builder.add_uv(u, v)
        for face, is_iris in zip(faces, iris, strict=True):
            builder.face(f"M_Iris{name}" if is_iris else f"M_Sclera{name}",
                         [(start + k, uv_start + k) for k in face])
        lash = np.array([[x - 1.2, y + 0.6, z + 0.1], [x + 1.2, y + 0.6, z + 0.1],
                         [x + 1.3, y + 0.9, z + 0.6], [x - 1.3, y + 0.9, z + 0.6]])
        add_part("M_EyeLashes", lash, [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)], [[0, 1, 2, 3]], tile=6.0)

    neutral = np.array(builder.vertices)
    skin = neutral[:n_skin]
    front_face = np.arange(int(is_face.sum()))
    # Landmarks: the face vertex nearest to each iBUG point of the synthetic BFM, on the front.
    targets = LANDMARKS_XY * CM_PER_BFM_UNIT
    candidates = front_face[skin[front_face, 2] > 0]
    distance = np.linalg.norm(skin[candidates, None, :2] - targets[None], axis=2)
    landmarks = candidates[distance.argmin(axis=0)]

    # Identity: smooth random fields over the head, of higher order than a translation, rotation or scaling
    # (which the fit's similarity transform takes: like ICT's identity shapes, these change the form).
    scale = np.array(SEMI_AXES) * CM_PER_BFM_UNIT
    unit = neutral / scale
    fields = np.stack([np.cos(math.pi * p * (unit[:, 0] + 1) / 2) * np.cos(math.pi * q * (unit[:, 1] + 1) / 2)
                       for p in range(4) for q in range(4) if p + q >= 3], axis=1)
    mixing = rng.standard_normal((fields.shape[1], 3, IDENTITY_COUNT)) / math.sqrt(fields.shape[1])
    identity = np.einsum("nm,mck->knc", fields, mixing) * IDENTITY_AMPLITUDE_CM
    identity /= (1.0 + np.arange(IDENTITY_COUNT) / 4.0)[:, None, None]

    # Expressions: a smooth bump of each family's region, mirrored for _R, each with its own direction and
    # centre offset so that no two shapes are alike (as in ICT, they are linearly independent).
    expressions = np.zeros((len(EXPRESSIONS), *neutral.shape))
    for k, name in enumerate(EXPRESSIONS):
        (cx, cy), radius, direction = _REGIONS[_family(name)]
        sign = -1.0 if name.endswith("_R") else 1.0
        if not name.endswith(("_L", "_R")):
            cx, sign = {"jawLeft": 1.5, "jawRight": -1.5, "mouthLeft": 1.5, "mouthRight": -1.5}.get(name, 0.0), 1.0
        jitter = rng.uniform(-0.6, 0.6, 2)
        weight = _gauss(neutral[:, 0], neutral[:, 1], sign * (cx + jitter[0]), cy + jitter[1], radius, radius)
        weight *= neutral[:, 2] > 0  # the front only
        weight[weight < 0.01] = 0.0  # local: most vertices do not move (sparse targets)
        vector = np.array(direction, float) + 0.5 * rng.standard_normal(3)
        vector *= [sign, 1.0, 1.0]
        expressions[k] = weight[:, None] * vector / np.linalg.norm(vector) * EXPRESSION_AMPLITUDE_CM
    indices = {
        "expressions": list(EXPRESSIONS),
        "fitting_expressions": list(EXPRESSIONS),
        "incompatibilities": [],
        "idx_to_fitting_verts": front_face.tolist(),
        "idx_to_rigid_verts": np.flatnonzero(skin[:, 2] < -0.5 * face_front).tolist(),
        "idx_to_lap_rigid_verts": [],
        "idx_to_landmark_verts": landmarks.tolist(),
        "idx_to_rigid_landmark_idx": [0, 36, 39, 42, 45, 16, 28, 31, 35],
    }
    return neutral, builder, indices, identity, expressions


HEADER = "# Synthetic ICT-FaceKit-format head written by uvidm_backend.devtools.ict_fixture (not the ICT model)\n"


def _obj_text(positions: np.ndarray, builder: _Builder) -> str:
    lines = [HEADER, "mtllib ICTFaceModelMaterial.mtl\n"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in positions]
    lines += [f"vt {u:.6f} {v:.6f}\n" for u, v in builder.uv]
    for material, faces in builder.groups.items():
        lines.append(f"usemtl {material}\n")
        lines += ["f " + " ".join(f"{v + 1}/{t + 1}" for v, t in face) + "\n" for face in faces]
    return "".join(lines)


def write_ict_folder(folder: str | Path, seed: int = 0) -> Path:
    """Writes the fixture into `folder` (created); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    neutral, builder, indices, identity, expressions = build_fixture(seed)
    (folder / "generic_neutral_mesh.obj").write_text(_obj_text(neutral, builder))
    for k, delta in enumerate(identity):
        (folder / f"identity{k:03d}.obj").write_text(_obj_text(neutral + delta, builder))
    for name, delta in zip(EXPRESSIONS, expressions, strict=True):
        (folder / f"{name}.obj").write_text(_obj_text(neutral + delta, builder))
    (folder / "vertex_indices.json").write_text(json.dumps(indices))
    (folder / "ICTFaceModelMaterial.mtl").write_text(
        "".join(f"newmtl {name}\nKd 0.6 0.6 0.6\n" for name in builder.groups))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_ict_folder(args.folder, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

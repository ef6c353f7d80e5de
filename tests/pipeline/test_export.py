"""GLB and OBJ/MTL writers: read back with trimesh and by hand, arrays compared exactly."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from gltf_validator import assert_valid
from PIL import Image

from uvidm_backend.pipeline.export import (
    ROUGHNESS,
    Material,
    MeshPart,
    MorphedMesh,
    MorphTargets,
    TexturedMesh,
    morphed_glb_bytes,
    write_glb,
    write_morphed_obj,
    write_obj,
)
from uvidm_backend.pipeline.output_folder import write_bytes

GLTF_FLOAT, GLTF_UINT32 = 5126, 5125


def uv_sphere(rows: int = 10, cols: int = 20, radius: float = 0.12) -> TexturedMesh:
    """A latitude-longitude sphere with a seam: vertices that share a position but not a UV."""
    lat = np.linspace(0.0, np.pi, rows + 1)
    lon = np.linspace(0.0, 2.0 * np.pi, cols + 1)
    lat, lon = np.meshgrid(lat, lon, indexing="ij")
    normals = np.stack([np.sin(lat) * np.sin(lon), np.cos(lat), np.sin(lat) * np.cos(lon)], axis=-1).reshape(-1, 3)
    uv = np.stack([lon / (2.0 * np.pi), 1.0 - lat / np.pi], axis=-1).reshape(-1, 2)  # north pole (+Y) at v = 1
    index = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    # non-square, asymmetric: a transposed or flipped texture cannot pass
    height, width = 24, 40
    texture = np.zeros((height, width, 3), np.uint8)
    texture[..., 0] = (np.arange(width) * 6)[None, :]
    texture[..., 1] = (np.arange(height) * 10)[:, None]
    texture[..., 2] = ((np.arange(height)[:, None] // 4 + np.arange(width)[None, :] // 4) % 2) * 255
    return TexturedMesh(
        vertices=radius * normals + np.array([0.0, 0.02, 0.01]),
        faces=faces,
        uv=uv,
        normals=normals * 3.0,  # not unit: the writers normalise
        texture=texture,
        name="test head #1",
    )


@pytest.fixture(scope="module")
def mesh() -> TexturedMesh:
    sphere = uv_sphere()
    assert len(np.unique(sphere.vertices, axis=0)) < len(sphere.vertices)  # the seam makes the test meaningful
    return sphere


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON" and json_length % 4 == 0
    tree = json.loads(data[20 : 20 + json_length])
    bin_offset = 20 + json_length
    bin_length, bin_type = struct.unpack_from("<I4s", data, bin_offset)
    assert bin_type == b"BIN\x00" and bin_offset + 8 + bin_length == len(data)
    return tree, data[bin_offset + 8 : bin_offset + 8 + bin_length]


def view_bytes(tree: dict, blob: bytes, view_index: int) -> bytes:
    view = tree["bufferViews"][view_index]
    assert view["buffer"] == 0 and "byteStride" not in view
    start = view.get("byteOffset", 0)
    return blob[start : start + view["byteLength"]]


def accessor_array(tree: dict, blob: bytes, index: int) -> np.ndarray:
    accessor = tree["accessors"][index]
    dtype = {GLTF_FLOAT: np.float32, GLTF_UINT32: np.uint32}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    data = view_bytes(tree, blob, accessor["bufferView"])
    start = accessor.get("byteOffset", 0)
    return np.frombuffer(data, dtype=dtype, count=accessor["count"] * width, offset=start).reshape(-1, width)


def test_glb_layout_parsed_by_hand(mesh: TexturedMesh, tmp_path: Path) -> None:
    path = write_glb(mesh, tmp_path / "head.glb")
    tree, blob = read_glb(path)
    assert tree["asset"]["version"] == "2.0"
    assert "extensionsRequired" not in tree

    roots = tree["scenes"][tree["scene"]]["nodes"]
    assert len(roots) == 1 and len(tree["nodes"]) == 1
    node = tree["nodes"][roots[0]]
    assert node["name"] == mesh.name and "matrix" not in node
    (primitive,) = tree["meshes"][node["mesh"]]["primitives"]
    assert primitive.get("mode", 4) == 4  # triangles
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}

    count = len(mesh.vertices)
    layout = {"POSITION": "VEC3", "NORMAL": "VEC3", "TEXCOORD_0": "VEC2"}
    for attribute, kind in layout.items():
        accessor = tree["accessors"][primitive["attributes"][attribute]]
        assert (accessor["componentType"], accessor["type"], accessor["count"]) == (GLTF_FLOAT, kind, count)
    positions_accessor = tree["accessors"][primitive["attributes"]["POSITION"]]
    np.testing.assert_array_equal(positions_accessor["min"], mesh.vertices.min(axis=0))
    np.testing.assert_array_equal(positions_accessor["max"], mesh.vertices.max(axis=0))
    indices_accessor = tree["accessors"][primitive["indices"]]
    assert indices_accessor["componentType"] == GLTF_UINT32 and indices_accessor["type"] == "SCALAR"
    assert indices_accessor["count"] == mesh.faces.size

    attributes = {name: accessor_array(tree, blob, index) for name, index in primitive["attributes"].items()}
    np.testing.assert_array_equal(attributes["POSITION"], mesh.vertices)
    np.testing.assert_array_equal(attributes["NORMAL"], mesh.unit_normals())
    np.testing.assert_allclose(np.linalg.norm(attributes["NORMAL"], axis=1), 1.0, atol=1e-6)
    flipped = np.stack([mesh.uv[:, 0], 1.0 - mesh.uv[:, 1].astype(np.float64)], axis=1)
    np.testing.assert_allclose(attributes["TEXCOORD_0"], flipped, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(accessor_array(tree, blob, primitive["indices"]).reshape(-1, 3), mesh.faces)

    material = tree["materials"][primitive["material"]]
    assert len(tree["materials"]) == 1 and material["name"] == mesh.material_name
    assert material.get("doubleSided", False) is False
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0
    assert pbr["roughnessFactor"] == pytest.approx(ROUGHNESS) and 0.5 <= pbr["roughnessFactor"] <= 0.7
    assert pbr.get("baseColorFactor", [1.0, 1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0, 1.0]
    assert pbr["baseColorTexture"].get("texCoord", 0) == 0
    image = tree["images"][tree["textures"][pbr["baseColorTexture"]["index"]]["source"]]
    assert image["mimeType"] == "image/png" and "uri" not in image
    png = view_bytes(tree, blob, image["bufferView"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), mesh.texture)


def test_glb_round_trip_with_trimesh(mesh: TexturedMesh, tmp_path: Path) -> None:
    path = write_glb(mesh, tmp_path / "head.glb")
    scene = trimesh.load(path, process=False)
    assert list(scene.geometry) == [mesh.name]
    assert scene.graph.nodes_geometry == [mesh.name]
    loaded = scene.geometry[mesh.name]
    # no merging, no reordering: the seam vertices are all there, in order
    np.testing.assert_array_equal(np.asarray(loaded.vertices, np.float32), mesh.vertices)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_allclose(loaded.visual.uv, mesh.uv, rtol=0, atol=1e-6)  # v flipped back by trimesh
    np.testing.assert_allclose(loaded.vertex_normals, mesh.unit_normals(), rtol=0, atol=1e-6)
    material = loaded.visual.material
    assert material.metallicFactor == 0.0 and material.roughnessFactor == pytest.approx(ROUGHNESS)
    texture = material.baseColorTexture
    assert texture.size == (mesh.texture.shape[1], mesh.texture.shape[0])
    np.testing.assert_array_equal(np.asarray(texture.convert("RGB")), mesh.texture)


def test_glb_replaces_existing_file_without_leftovers(mesh: TexturedMesh, tmp_path: Path) -> None:
    target = tmp_path / "head.glb"
    target.write_bytes(b"old")
    assert write_glb(mesh, target) == target
    assert target.read_bytes()[:4] == b"glTF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.glb"]


def parse_obj(path: Path) -> dict[str, list[list[str]]]:
    lines: dict[str, list[list[str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            keyword, *rest = line.split()
            lines.setdefault(keyword, []).append(rest)
    return lines


def test_obj_and_mtl_parsed_by_hand(mesh: TexturedMesh, tmp_path: Path) -> None:
    obj_path, mtl_path = write_obj(mesh, tmp_path / "head.obj", "head.mtl", "albedo.png")
    assert (obj_path, mtl_path) == (tmp_path / "head.obj", tmp_path / "head.mtl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head.mtl", "head.obj"]  # texture not asked for
    obj = parse_obj(obj_path)
    count = len(mesh.vertices)
    assert [len(obj[k]) for k in ("v", "vt", "vn", "f")] == [count, count, count, len(mesh.faces)]
    # float32 values read back bit-exact
    np.testing.assert_array_equal(np.array(obj["v"], np.float32), mesh.vertices)
    np.testing.assert_array_equal(np.array(obj["vt"], np.float32), mesh.uv)
    np.testing.assert_array_equal(np.array(obj["vn"], np.float32), mesh.unit_normals())
    corners = np.array([[corner.split("/") for corner in face] for face in obj["f"]], np.int64)
    assert corners.shape == (len(mesh.faces), 3, 3)
    for attribute in range(3):  # v/vt/vn, 1-based, one index per vertex
        np.testing.assert_array_equal(corners[..., attribute] - 1, mesh.faces)
    assert obj["mtllib"] == [["head.mtl"]]
    assert len(obj["o"]) == 1 and len(obj["o"][0]) == 1 and "#" not in obj["o"][0][0]
    (material,) = obj["usemtl"]

    mtl = parse_obj(mtl_path)
    assert mtl["newmtl"] == [material]
    assert mtl["map_Kd"] == [["albedo.png"]]
    assert np.array(mtl["Kd"], float).tolist() == [[1.0, 1.0, 1.0]]
    assert 0.0 <= float(mtl["Ks"][0][0]) <= 0.5 and 0.0 < float(mtl["Ns"][0][0]) <= 500.0


def test_obj_of_another_topology_is_not_taken_from_the_cache(mesh: TexturedMesh, tmp_path: Path) -> None:
    """Face and UV lines are formatted once per topology: a second mesh must still get its own."""
    write_obj(mesh, tmp_path / "a.obj", "a.mtl", "albedo.png")
    other = uv_sphere(rows=6, cols=9)
    write_obj(other, tmp_path / "b.obj", "b.mtl", "albedo.png")
    obj = parse_obj(tmp_path / "b.obj")
    corners = np.array([[corner.split("/") for corner in face] for face in obj["f"]], np.int64)
    np.testing.assert_array_equal(corners[..., 0] - 1, other.faces)
    np.testing.assert_array_equal(np.array(obj["vt"], np.float32), other.uv)
    # Same topology again, new vertex positions: the cached lines are reused, the positions are new.
    moved = TexturedMesh(vertices=mesh.vertices * 2, faces=mesh.faces.copy(), uv=mesh.uv.copy(),
                         normals=mesh.normals, texture=mesh.texture, name=mesh.name)
    write_obj(moved, tmp_path / "c.obj", "c.mtl", "albedo.png")
    first, moved_text = (tmp_path / "a.obj").read_text(), (tmp_path / "c.obj").read_text()
    assert first.split("usemtl")[1] == moved_text.split("usemtl")[1]
    np.testing.assert_array_equal(np.array(parse_obj(tmp_path / "c.obj")["v"], np.float32), moved.vertices)


def test_obj_loads_in_trimesh_with_texture(mesh: TexturedMesh, tmp_path: Path) -> None:
    write_obj(mesh, tmp_path / "head.obj", "head.mtl", "textures/albedo.png", write_texture=True)
    with Image.open(tmp_path / "textures" / "albedo.png") as written:
        np.testing.assert_array_equal(np.asarray(written), mesh.texture)
    loaded = trimesh.load(tmp_path / "head.obj", process=False)
    assert isinstance(loaded, trimesh.Trimesh)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_allclose(loaded.visual.uv, mesh.uv, rtol=0, atol=1e-7)
    image = loaded.visual.material.image
    assert image is not None and image.size == (mesh.texture.shape[1], mesh.texture.shape[0])
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), mesh.texture)


@pytest.mark.parametrize(
    ("mtl_name", "texture_name"),
    [
        ("a b.mtl", "t.png"),
        ("sub/head.mtl", "t.png"),
        ("head.mtl", "/abs/t.png"),
        ("head.mtl", "../t.png"),
        ("head.mtl", "C:/t.png"),
        ("head.mtl", "t\\x.png"),
        ("", "t.png"),
    ],
)
def test_obj_refuses_unsafe_file_names(mesh: TexturedMesh, tmp_path: Path, mtl_name: str, texture_name: str) -> None:
    with pytest.raises(ValueError):
        write_obj(mesh, tmp_path / "head.obj", mtl_name, texture_name)
    assert list(tmp_path.iterdir()) == []


def test_mesh_arrays_are_copied_and_read_only() -> None:
    vertices = np.zeros((3, 3), np.float64)
    vertices[1, 0] = vertices[2, 1] = 1.0
    mesh = TexturedMesh(
        vertices,
        [[0, 1, 2]],
        np.zeros((3, 2)),
        np.tile([0.0, 0.0, 1.0], (3, 1)),
        np.zeros((2, 2, 3), np.uint8),
        name="tri",
    )
    vertices[0, 0] = 5.0
    assert mesh.vertices[0, 0] == 0.0 and mesh.vertices.dtype == np.float32
    for array in (mesh.vertices, mesh.faces, mesh.uv, mesh.normals, mesh.texture):
        assert not array.flags.writeable


@pytest.mark.parametrize(
    "change",
    [
        {"vertices": np.zeros((3, 2))},
        {"faces": np.array([[0, 1, 2.0]])},
        {"faces": np.array([[0, 1, 3]])},
        {"faces": np.array([[0, 1, -1]])},
        {"faces": np.zeros((0, 3), int)},
        {"uv": np.zeros((4, 2))},
        {"normals": np.full((3, 3), np.nan)},
        {"texture": np.zeros((2, 2, 3), np.float32)},
        {"texture": np.zeros((2, 2, 4), np.uint8)},
        {"name": " "},
    ],
)
def test_mesh_refuses_bad_input(change: dict) -> None:
    fields = {
        "vertices": np.eye(3),
        "faces": np.array([[0, 1, 2]]),
        "uv": np.zeros((3, 2)),
        "normals": np.eye(3),
        "texture": np.zeros((2, 2, 3), np.uint8),
        "name": "tri",
    }
    with pytest.raises(ValueError):
        TexturedMesh(**(fields | change))


def morphed_sphere(targets: np.ndarray) -> MorphedMesh:
    """The sphere as one part of a morphed mesh with the given (E, N, 3) morph targets."""
    sphere = uv_sphere()
    part = MeshPart(0, sphere.vertices, sphere.normals, sphere.uv, sphere.faces, targets)
    names = tuple(f"shape{index}" for index in range(len(targets)))
    texture = np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[None, :, None], 32, axis=0).repeat(3, axis=2)
    return MorphedMesh("morphed", (part,), (Material("morphed_skin", texture=texture),), names,
                       tuple(np.linspace(0.0, 1.0, len(targets)).tolist()))


def sphere_targets() -> np.ndarray:
    """Targets none, a few and all of whose vertices move (no data, sparse, dense in the GLB)."""
    count = len(uv_sphere().vertices)
    rng = np.random.default_rng(0)
    targets = np.zeros((3, count, 3), np.float32)
    targets[1, 5:40] = rng.normal(0.0, 0.01, (35, 3))
    targets[1, 7] = 0.0  # a vertex in the middle of the moving ones that stays
    targets[2] = rng.normal(0.0, 0.01, (count, 3)) + 0.02  # all positive in x: its minimum is not 0
    return targets


def test_morph_targets_keep_what_moves() -> None:
    dense = sphere_targets()
    targets = MorphTargets.from_dense(dense)
    assert len(targets) == 3 and targets.starts.tolist()[:3] == [0, 0, 34]
    np.testing.assert_array_equal(targets.dense(), dense)
    lows, highs = targets.bounds()
    np.testing.assert_array_equal(lows, dense.min(axis=1))
    np.testing.assert_array_equal(highs, dense.max(axis=1))
    weights = np.array([1.0, 0.5, 0.25], np.float32)
    np.testing.assert_allclose(targets.applied(weights), np.einsum("e,enc->nc", weights, dense), atol=1e-8)
    turn = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(targets.transformed(turn).dense(), dense @ turn.astype(np.float32), atol=1e-8)
    with pytest.raises(ValueError, match="rise from 0"):
        MorphTargets(10, np.array([0, 3, 2]), np.arange(3), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"lie in \[0, 9\]"):
        MorphTargets(10, np.array([0, 1]), np.array([10]), np.zeros((1, 3)))


def test_morphed_glb_targets_read_back(tmp_path: Path) -> None:
    dense = sphere_targets()
    mesh = morphed_sphere(dense)
    path = write_bytes(morphed_glb_bytes(mesh), tmp_path / "morphed.glb")
    assert_valid(path)  # Khronos validator: accessor bounds, sparse indices
    tree, blob = read_glb(path)
    primitive = tree["meshes"][0]["primitives"][0]
    layouts = []
    for index, target in enumerate(primitive["targets"]):
        accessor = tree["accessors"][target["POSITION"]]
        values = np.zeros((accessor["count"], 3), np.float32)
        if "bufferView" in accessor:
            values = accessor_array(tree, blob, target["POSITION"]).copy()
        if "sparse" in accessor:
            sparse = accessor["sparse"]
            rows = np.frombuffer(view_bytes(tree, blob, sparse["indices"]["bufferView"]), "<u2")
            values[rows] = np.frombuffer(view_bytes(tree, blob, sparse["values"]["bufferView"]), "<f4").reshape(-1, 3)
        layouts.append("sparse" if "sparse" in accessor else "dense" if "bufferView" in accessor else "none")
        np.testing.assert_array_equal(values, dense[index])
        assert accessor["min"] == dense[index].min(axis=0).tolist()
        assert accessor["max"] == dense[index].max(axis=0).tolist()
    assert layouts == ["none", "sparse", "dense"]
    obj, _ = write_morphed_obj(mesh, tmp_path / "morphed.obj", "morphed.mtl")
    posed = np.array([line.split()[1:] for line in obj.read_text().splitlines() if line.startswith("v ")], np.float32)
    np.testing.assert_allclose(posed, mesh.parts[0].vertices + np.einsum("e,enc->nc", np.float32(mesh.weights), dense),
                               atol=1e-7)

"""`--head full|both` end to end on CPU: the synthetic ICT head fitted to the pipeline's BFM head."""

import json
import struct

import numpy as np
import pytest
from gltf_validator import assert_valid
from pipeline.photos import fixture_landmarks, sample_photo

from uvidm_backend.cli import main
from uvidm_backend.pipeline import GenerateOptions, InputError
from uvidm_backend.pipeline.errors import ModelFilesMissing

FULL_FILES = {"head_full.glb", "head_full.obj", "head_full.mtl", "head_full_skin.png", "head_full_sclera_L.png",
              "head_full_sclera_R.png", "head_full_iris_L.png", "head_full_iris_R.png"}
COMMON = {"albedo.png", "albedo_model.png", "albedo_model_matched.png", "preview.png", "result.json"}


def _options(**extra):
    face = fixture_landmarks()["t1.jpg"]["faces"][0]
    return GenerateOptions(steps=2, texture_size=256, landmarks=face["lm5"], **extra)


@pytest.fixture(scope="module")
def both(full_pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("both") / "t1"
    full_pipeline.generate_to_folder(sample_photo("t1.jpg"), folder, _options(head="both"))
    return folder


def read_glb(path):
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    tree = json.loads(data[20:20 + length])
    return tree, data[28 + length:]


def accessor_array(tree, blob, index):
    accessor = tree["accessors"][index]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[accessor["type"]]
    dtype = {5126: "<f4", 5125: "<u4", 5123: "<u2"}[accessor["componentType"]]
    values = np.zeros((accessor["count"], width), np.float32)
    if "bufferView" in accessor:
        view = tree["bufferViews"][accessor["bufferView"]]
        values = np.frombuffer(blob, dtype, accessor["count"] * width, view["byteOffset"]).reshape(-1, width)
    if "sparse" in accessor:
        sparse = accessor["sparse"]
        index_view = tree["bufferViews"][sparse["indices"]["bufferView"]]
        index_dtype = {5125: "<u4", 5123: "<u2"}[sparse["indices"]["componentType"]]
        rows = np.frombuffer(blob, index_dtype, sparse["count"], index_view["byteOffset"])
        value_view = tree["bufferViews"][sparse["values"]["bufferView"]]
        values = values.copy()
        values[rows] = np.frombuffer(blob, "<f4", sparse["count"] * width, value_view["byteOffset"]).reshape(-1, 3)
    return values


def test_both_heads_are_written_and_valid(both):
    assert {path.name for path in both.iterdir()} == FULL_FILES | COMMON | {"head.glb", "head.obj", "head.mtl"}
    assert_valid(both / "head.glb", both / "head_full.glb")  # Khronos validator: 0 errors, warnings, infos
    result = json.loads((both / "result.json").read_text())
    assert set(result["files"]) == FULL_FILES | COMMON | {"head.glb", "head.obj", "head.mtl"}
    assert result["full_head"]["shape_keys"] == 53 and "full_head" in result["timings"]
    assert result["full_head"]["landmark_residual_mm"] < 15.0


def test_morph_targets_materials_and_weights(both):
    tree, blob = read_glb(both / "head_full.glb")
    mesh = tree["meshes"][0]
    names = mesh["extras"]["targetNames"]
    assert len(names) == 53 and "jawOpen" in names and "eyeBlink_L" in names
    assert len(mesh["weights"]) == 53 and all(0.0 <= w <= 1.0 for w in mesh["weights"])
    materials = [m["name"] for m in tree["materials"]]
    assert materials == ["head_full_skin", "head_full_sclera_L", "head_full_sclera_R", "head_full_iris_L",
                         "head_full_iris_R", "head_full_teeth", "head_full_gums_tongue", "head_full_eyelashes"]
    lashes = tree["materials"][-1]
    assert lashes["alphaMode"] == "BLEND" and lashes["pbrMetallicRoughness"]["baseColorFactor"][3] < 1.0
    targets = [t["POSITION"] for p in mesh["primitives"] for t in p["targets"]]
    assert any("sparse" in tree["accessors"][i] for i in targets)  # local shapes are stored sparse
    skin = mesh["primitives"][0]
    jaw = accessor_array(tree, blob, skin["targets"][names.index("jawOpen")]["POSITION"])
    assert 0.001 < np.abs(jaw).max() < 0.05  # metres: millimetres to centimetres


def test_obj_is_the_glb_at_its_default_weights(both):
    """The OBJ (no shape keys) is posed with the expression that the GLB's default weights give: the vertices
    the full head's shaping made, as an importer of the GLB computes them from the targets."""
    tree, blob = read_glb(both / "head_full.glb")
    mesh = tree["meshes"][0]
    weights = np.asarray(mesh["weights"], np.float32)
    assert weights.any()  # the photo's expression
    posed = []
    for primitive in mesh["primitives"]:
        vertices = accessor_array(tree, blob, primitive["attributes"]["POSITION"]).astype(np.float64)
        for weight, target in zip(weights, primitive["targets"], strict=True):
            vertices = vertices + weight * accessor_array(tree, blob, target["POSITION"])
        posed.append(vertices)
    obj = [line.split()[1:] for line in (both / "head_full.obj").read_text().splitlines() if line.startswith("v ")]
    np.testing.assert_allclose(np.asarray(obj, np.float64), np.concatenate(posed), rtol=0, atol=1e-6)


def test_skin_is_closed_except_the_neck_and_normals_point_out(both):
    tree, blob = read_glb(both / "head_full.glb")
    skin = tree["meshes"][0]["primitives"][0]
    vertices = accessor_array(tree, blob, skin["attributes"]["POSITION"]).astype(np.float64)
    normals = accessor_array(tree, blob, skin["attributes"]["NORMAL"])
    faces = accessor_array(tree, blob, skin["indices"]).astype(np.int64).reshape(-1, 3)
    # weld the UV seams' split vertices by position, then count edges used by one triangle only
    _, welded = np.unique(vertices.round(7), axis=0, return_inverse=True)
    welded_faces = welded.reshape(-1)[faces]
    edges = np.sort(np.concatenate([welded_faces[:, [0, 1]], welded_faces[:, [1, 2]], welded_faces[:, [2, 0]]]), 1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    assert counts.max() == 2 and len(boundary) == 48  # the fixture's neck cut, a ring of 48 edges
    neck = np.unique(boundary)
    positions = np.zeros((welded.max() + 1, 3))
    positions[welded.reshape(-1)] = vertices
    assert positions[neck, 1].max() < positions[:, 1].min() + 0.2 * np.ptp(positions[:, 1])  # at the bottom
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() > 0  # positive volume: wound counter-clockwise outside
    outward = vertices - vertices.mean(axis=0)
    assert np.mean(np.sum(normals * outward, axis=1) > 0) > 0.9


def test_texture_has_no_seams(both):
    from PIL import Image

    tree, blob = read_glb(both / "head_full.glb")
    skin = tree["meshes"][0]["primitives"][0]
    vertices = accessor_array(tree, blob, skin["attributes"]["POSITION"])
    uv = accessor_array(tree, blob, skin["attributes"]["TEXCOORD_0"])
    texture = np.asarray(Image.open(both / "head_full_skin.png").convert("RGB"), np.float64)
    height, width = texture.shape[:2]
    assert (height, width) == (256, 512)  # --texture-size rows, the face and the back of the head side by side
    # split vertices of a UV seam: one point, two places in the texture, the same colour
    _, welded, counts = np.unique(vertices.round(7), axis=0, return_inverse=True, return_counts=True)
    seam = np.flatnonzero(counts[welded.reshape(-1)] > 1)
    assert len(seam) > 20
    colour = texture[np.clip((uv[seam, 1] * (height - 1)).round().astype(int), 0, height - 1),
                     np.clip((uv[seam, 0] * (width - 1)).round().astype(int), 0, width - 1)]
    differences = [np.ptp(colour[welded.reshape(-1)[seam] == group], axis=0).max()
                   for group in np.unique(welded.reshape(-1)[seam])]
    assert np.median(differences) < 12 and np.max(differences) < 60


def test_full_only_and_neutral(full_pipeline, tmp_path):
    folder = tmp_path / "t1"
    full_pipeline.generate_to_folder(sample_photo("t1.jpg"), folder, _options(head="full", expression="neutral"))
    assert {path.name for path in folder.iterdir()} == FULL_FILES | COMMON
    tree, _ = read_glb(folder / "head_full.glb")
    assert tree["meshes"][0]["weights"] == [0.0] * 53


def test_bad_head_option_and_missing_model(pipeline, tmp_path):
    with pytest.raises(InputError, match="head must be one of bfm, full, both"):
        GenerateOptions(head="ict")
    with pytest.raises(ModelFilesMissing, match="uvidm weights download --full-head"):
        pipeline.generate(sample_photo("t1.jpg"), _options(head="full"))


def test_cli_head_flag(full_model_paths, tmp_path, capsys):
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps(fixture_landmarks()))
    args = ["generate", str(sample_photo("t1.jpg")), "-o", str(tmp_path / "out"), "--weights",
            str(full_model_paths.weights), "--bfm", str(full_model_paths.bfm), "--device", "cpu", "--steps", "2",
            "--texture-size", "256", "--landmarks", str(landmarks), "--head", "full"]
    assert main(args) == 0
    assert (tmp_path / "out" / "t1" / "head_full.glb").is_file()
    assert not (tmp_path / "out" / "t1" / "head.glb").exists()
    with pytest.raises(SystemExit):
        main([*args[:-1], "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err

"""The full head (head_full.glb) in Blender: shape keys, materials, size and orientation; FBX keeps the keys."""

import json
import struct

import numpy as np
import pytest
import torch

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="module")
def full_head_folder(tmp_path_factory):
    """A result folder holding head_full.glb made from the synthetic ICT and BFM heads (photo expression)."""
    from uvidm_backend.devtools.ict_fixture import write_ict_folder
    from uvidm_backend.devtools.synthetic_head import write_bfm_folder
    from uvidm_backend.fullhead.files import write_full_head_files
    from uvidm_backend.fullhead.model import FullHeadModel
    from uvidm_backend.geometry.bfm_files import load_bfm
    from uvidm_backend.geometry.face_model import FaceModel

    root = tmp_path_factory.mktemp("full")
    bfm = load_bfm(write_bfm_folder(root / "BFM"))
    face_model = FaceModel.whole_head(bfm, dtype=torch.float64)
    model = FullHeadModel.load(write_ict_folder(root / "ict"), bfm, face_model.mean_shape.reshape(-1, 3).numpy())
    generator = torch.Generator().manual_seed(1)
    shape, identity_shape = face_model.compute_shape(torch.randn(1, face_model.id_dims, generator=generator,
                                                                 dtype=torch.float64),
                                                     2.0 * torch.randn(1, face_model.exp_dims, generator=generator,
                                                                       dtype=torch.float64))
    albedo = torch.full((1, 3, 64, 64), 0.6)
    head = model.make_head(identity_shape[0].numpy(), shape[0].numpy(), albedo, 256)
    folder = root / "result"
    folder.mkdir()
    write_full_head_files(head, folder)
    return folder


def _gltf(path):
    data = path.read_bytes()
    length = struct.unpack_from("<I", data, 12)[0]
    return json.loads(data[20:20 + length])


def _imported(folder):
    assert bpy.ops.uvidm.import_recent(path=str(folder / "head_full.glb")) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def test_import_has_shape_keys_materials_size_and_orientation(scene, full_head_folder):
    gltf = _gltf(full_head_folder / "head_full.glb")
    names, weights = gltf["meshes"][0]["extras"]["targetNames"], gltf["meshes"][0]["weights"]
    head = _imported(full_head_folder)
    keys = head.data.shape_keys.key_blocks
    assert [key.name for key in keys] == ["Basis", *names] and len(names) == 53
    np.testing.assert_allclose([keys[name].value for name in names], weights, atol=1e-5)
    assert max(weights) > 0.0  # the photo's expression is set, not baked in
    assert {m.name for m in head.data.materials} == {m["name"] for m in gltf["materials"]}
    lashes = bpy.data.materials["head_full_eyelashes"]
    assert lashes.node_tree.nodes["Principled BSDF"].inputs["Alpha"].default_value == pytest.approx(0.85, abs=1e-3)
    # metres, +Y up in the file -> +Z up in Blender, the face towards -Y
    vertices = np.array([v.co[:] for v in head.data.vertices])
    low = np.min([accessor["min"] for p in gltf["meshes"][0]["primitives"]
                  for accessor in [gltf["accessors"][p["attributes"]["POSITION"]]]], axis=0)
    high = np.max([accessor["max"] for p in gltf["meshes"][0]["primitives"]
                   for accessor in [gltf["accessors"][p["attributes"]["POSITION"]]]], axis=0)
    np.testing.assert_allclose(vertices.max(0) - vertices.min(0), (high - low)[[0, 2, 1]], rtol=1e-4)
    assert 0.1 < vertices[:, 2].max() - vertices[:, 2].min() < 0.4  # a head, in metres
    nose = vertices[np.argmin(vertices[:, 1])]  # the front-most point
    assert abs(nose[0]) < 0.01 and nose[2] > vertices[:, 2].min() + 0.05


@pytest.mark.parametrize("preset", ["UNITY", "UNREAL"])
def test_fbx_exports_keep_the_shape_keys(scene, full_head_folder, tmp_path, preset):
    head = _imported(full_head_folder)
    names = [key.name for key in head.data.shape_keys.key_blocks]
    target = tmp_path / f"head_{preset.lower()}.fbx"
    assert bpy.ops.uvidm.export_game(preset=preset, filepath=str(target)) == {"FINISHED"}
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(target))
    meshes = [obj for obj in bpy.data.objects if obj.type == "MESH"]
    assert len(meshes) == 1 and meshes[0].data.shape_keys is not None
    assert [key.name for key in meshes[0].data.shape_keys.key_blocks] == names

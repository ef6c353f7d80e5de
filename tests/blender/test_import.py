"""Importing a result into Blender: mesh, UVs, material, scale, collection, undo, export, render."""

import sys

import pytest

bpy = pytest.importorskip("bpy")

from mathutils import Vector  # noqa: E402  (after bpy, which provides it)


def _head(name="portrait"):
    return bpy.data.objects[name]


def test_import_result_folder(scene, result_folder):
    scene.cursor.location = (1.0, 2.0, 3.0)
    assert bpy.ops.uvidm.import_recent(path=str(result_folder)) == {"FINISHED"}
    head = _head()
    assert head.type == "MESH" and head.data.name == "portrait"
    assert tuple(head.location) == (1.0, 2.0, 3.0) and tuple(head.scale) == (1.0, 1.0, 1.0)
    assert [c.name for c in head.users_collection] == ["UV-IDM"]
    assert bpy.data.collections["UV-IDM"] in list(scene.collection.children)
    assert head.select_get() and bpy.context.view_layer.objects.active == head
    assert head["uvidm_result"] == str(result_folder)

    mesh = head.data
    obj_lines = (result_folder / "head.obj").read_text().splitlines()
    assert len(mesh.vertices) == sum(line.startswith("v ") for line in obj_lines)
    assert len(mesh.polygons) == sum(line.startswith("f ") for line in obj_lines)
    assert all(p.use_smooth for p in mesh.polygons)
    # metres, +Y up in the file -> +Z up in Blender: a 20 cm sphere, its top at z = +10 cm
    size = Vector([max(v.co[i] for v in mesh.vertices) - min(v.co[i] for v in mesh.vertices) for i in range(3)])
    assert size.x == pytest.approx(0.2, abs=5e-3) and size.z == pytest.approx(0.2, abs=1e-4)
    top = max(mesh.vertices, key=lambda v: v.co.z)
    assert top.co.z == pytest.approx(0.1, abs=1e-4)

    assert [uv.name for uv in mesh.uv_layers] == ["UVMap"]
    uvs = [tuple(d.uv) for d in mesh.uv_layers[0].data]
    assert len(uvs) == len(mesh.loops)
    # the loop of the file's first corner carries the file's first texture coordinate
    first_face = next(line for line in obj_lines if line.startswith("f ")).split()[1:]
    vt = [tuple(map(float, line.split()[1:3])) for line in obj_lines if line.startswith("vt ")]
    for loop, corner in zip(mesh.polygons[0].loop_indices, first_face, strict=True):
        assert uvs[loop] == pytest.approx(vt[int(corner.split("/")[1]) - 1], abs=1e-6)

    material = mesh.materials[0]
    nodes = material.node_tree.nodes
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Roughness"].default_value == pytest.approx(0.6)
    link = bsdf.inputs["Base Color"].links[0]
    assert link.from_node.type == "TEX_IMAGE"
    image = link.from_node.image
    assert bpy.path.abspath(image.filepath) == str(result_folder / "albedo.png")
    assert image.colorspace_settings.name == "sRGB" and tuple(image.size) == (64, 64)
    output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    assert output.inputs["Surface"].links[0].from_node == bsdf


def test_scene_units_keep_real_size(scene, result_folder):
    scene.unit_settings.scale_length = 0.01  # one Blender unit = 1 cm
    bpy.ops.uvidm.import_recent(path=str(result_folder))
    assert tuple(_head().scale) == pytest.approx((100.0, 100.0, 100.0))


def test_import_glb_alone(scene, tmp_path, result_folder):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "scan.glb").write_bytes((result_folder / "head.glb").read_bytes())
    assert bpy.ops.uvidm.import_result(filepath=str(lone / "scan.glb")) == {"FINISHED"}
    head = _head("scan")
    assert [o.name for o in scene.objects] == ["scan"]  # no empties left over from the importer
    assert [c.name for c in head.users_collection] == ["UV-IDM"]
    world = [head.matrix_world @ v.co for v in head.data.vertices]
    assert max(v.z for v in world) - min(v.z for v in world) == pytest.approx(0.2, abs=1e-3)  # +Y up -> +Z up
    assert head.data.uv_layers
    bsdf = next(n for n in head.data.materials[0].node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    assert bsdf.inputs["Base Color"].links  # the embedded texture is wired to Base Color


def test_import_errors_leave_the_scene_alone(scene, tmp_path):
    with pytest.raises(RuntimeError, match="holds no head.obj or head.glb"):
        bpy.ops.uvidm.import_recent(path=str(tmp_path))
    assert len(scene.objects) == 0 and "UV-IDM" not in bpy.data.collections


def test_import_is_one_undo_step(scene, result_folder):
    """As from the UI: Blender pushes one undo step after the operator (scripts ask with undo=True)."""
    bpy.ops.ed.undo_push(message="before import")
    bpy.ops.uvidm.import_recent("EXEC_DEFAULT", True, path=str(result_folder))
    assert "portrait" in bpy.context.scene.objects
    bpy.ops.ed.undo()
    assert "portrait" not in bpy.context.scene.objects  # one undo removes the head, collection and all
    assert "UV-IDM" not in bpy.context.scene.collection.children
    bpy.ops.ed.redo()
    assert "portrait" in bpy.context.scene.objects


@pytest.mark.parametrize("preset, suffix", [("UNITY", ".fbx"), ("UNREAL", ".fbx"), ("GLTF", ".glb")])
def test_export_for_game_engines(scene, result_folder, tmp_path, preset, suffix):
    bpy.ops.uvidm.import_recent(path=str(result_folder))
    target = tmp_path / f"head_{preset.lower()}.bin"
    assert bpy.ops.uvidm.export_game(preset=preset, filepath=str(target)) == {"FINISHED"}
    written = target.with_suffix(suffix)  # the extension follows the preset
    assert written.is_file() and written.stat().st_size > 1000
    bpy.ops.wm.read_homefile(use_empty=True)
    if suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(written))
    else:
        bpy.ops.import_scene.fbx(filepath=str(written))
    mesh = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    world = [mesh.matrix_world @ v.co for v in mesh.data.vertices]
    height = max(v.z for v in world) - min(v.z for v in world)
    assert height == pytest.approx(0.2, rel=1e-3)  # round trip: still a 20 cm head, +Z up


def test_export_conventions(addon):
    presets = sys.modules[f"{addon}.uvidm_blender.operators"].EXPORT_PRESETS
    unity, unreal, gltf = presets["UNITY"][1], presets["UNREAL"][1], presets["GLTF"][1]
    assert (unity["axis_up"], unity["axis_forward"], unity["bake_space_transform"]) == ("Y", "-Z", True)
    assert unity["apply_scale_options"] == "FBX_SCALE_ALL"
    assert unreal["apply_scale_options"] == "FBX_SCALE_NONE" and unreal["apply_unit_scale"]
    assert gltf["export_format"] == "GLB" and gltf["export_yup"]


def test_render_shows_the_texture(scene, result_folder, tmp_path, render):
    """Cycles, CPU, a few samples: the head covers the middle of the frame in the albedo's colours."""

    bpy.ops.uvidm.import_recent(path=str(result_folder))
    # the file's face (+Z there, -Y here) looks at the camera: left half red, right half blue
    image = render(scene, tmp_path / "frame.png", (0.0, -0.6, 0.0), light_energy=3.0)
    def count(box, test):
        return sum(test(*image.getpixel((x, y))) for x in range(box[0], box[2]) for y in range(box[1], box[3]))

    def red(r, g, b):
        return r > 2 * b and r > 40

    def blue(r, g, b):
        return b > 2 * r and b > 40

    left, right = (16, 16, 32, 48), (32, 16, 48, 48)
    assert count(left, red) > 200 and count(right, blue) > 200, (count(left, red), count(right, blue))
    assert count(left, blue) == 0 and count(right, red) == 0
    corners = [image.getpixel((0, 0)), image.getpixel((63, 63))]
    assert all(abs(r - b) < 20 for r, g, b in corners)  # the world background, not the head

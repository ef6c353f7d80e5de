"""Importing a result the backend made (head.obj, head.glb, albedo.png of a real `uvidm serve` job) into
Blender: mesh, UVs, material, scale, placement, collection, undo, export, render."""

import sys

import pytest

bpy = pytest.importorskip("bpy")

from mathutils import Vector  # noqa: E402  (after bpy, which provides it)


def _head(name="t1"):
    return bpy.data.objects[name]


def _obj_size(folder) -> Vector:
    """The OBJ's extent in Blender's axes: (x, y, z) in the file is (x, -z, y) here."""
    vertices = [tuple(map(float, line.split()[1:4])) for line in (folder / "head.obj").read_text().splitlines()
                if line.startswith("v ")]
    extent = [max(v[i] for v in vertices) - min(v[i] for v in vertices) for i in range(3)]
    return Vector((extent[0], extent[2], extent[1]))


def test_import_result_folder(scene, result_folder):
    scene.cursor.location = (1.0, 2.0, 3.0)
    assert bpy.ops.uvidm.import_recent(path=str(result_folder)) == {"FINISHED"}
    head = _head()
    assert head.type == "MESH" and head.data.name == "t1"
    # an empty scene: the head at the 3D cursor, real size
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
    # metres, +Y up in the file -> +Z up in Blender: a head of 15 to 40 cm, taller than deep is wide...
    size = Vector([max(v.co[i] for v in mesh.vertices) - min(v.co[i] for v in mesh.vertices) for i in range(3)])
    assert tuple(size) == pytest.approx(tuple(_obj_size(result_folder)), abs=1e-5)
    assert 0.15 < size.z < 0.4
    # ...and the face looks towards -Y (Blender's front view): the nose tip is the front-most point
    nose = min(mesh.vertices, key=lambda v: v.co.y)
    centre_x = (max(v.co.x for v in mesh.vertices) + min(v.co.x for v in mesh.vertices)) / 2
    assert abs(nose.co.x - centre_x) < 0.2 * size.x

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
    assert image.colorspace_settings.name == "sRGB" and tuple(image.size) == (256, 256)
    output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    assert output.inputs["Surface"].links[0].from_node == bsdf


def test_scene_units_keep_real_size(scene, result_folder):
    scene.unit_settings.scale_length = 0.01  # one Blender unit = 1 cm
    bpy.ops.uvidm.import_recent(path=str(result_folder))
    assert tuple(_head().scale) == pytest.approx((100.0, 100.0, 100.0))


def test_import_beside_the_scene(scene, result_folder):
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.5, 0.0, 0.0))
    cube = bpy.context.active_object
    cube.select_set(True)
    assert bpy.ops.uvidm.import_recent(path=str(result_folder)) == {"FINISHED"}
    head = _head()
    world = [head.matrix_world @ v.co for v in head.data.vertices]
    left, right = min(v.x for v in world), max(v.x for v in world)
    assert left == pytest.approx(1.5 + (right - left) / 2, abs=1e-4)  # half a head's width right of the cube
    middle_z = (max(v.z for v in world) + min(v.z for v in world)) / 2
    assert middle_z == pytest.approx(0.0, abs=1e-4)  # centred on the scene's height
    assert head.select_get() and not cube.select_get() and bpy.context.view_layer.objects.active == head
    message = bpy.context.window_manager.uvidm.message
    assert message == "Imported t1 beside the scene, selected and framed"
    assert bpy.context.window_manager.uvidm.last_result == str(result_folder)


def test_import_glb_alone(scene, tmp_path, result_folder):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "scan.glb").write_bytes((result_folder / "head.glb").read_bytes())
    assert bpy.ops.uvidm.import_result(filepath=str(lone / "scan.glb")) == {"FINISHED"}
    head = _head("scan")
    assert [o.name for o in scene.objects] == ["scan"]  # no empties left over from the importer
    assert [c.name for c in head.users_collection] == ["UV-IDM"]
    world = [head.matrix_world @ v.co for v in head.data.vertices]
    size = Vector([max(v[i] for v in world) - min(v[i] for v in world) for i in range(3)])
    assert tuple(size) == pytest.approx(tuple(_obj_size(result_folder)), abs=1e-4)  # +Y up -> +Z up, as the OBJ
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
    assert "t1" in bpy.context.scene.objects
    bpy.ops.ed.undo()
    assert "t1" not in bpy.context.scene.objects  # one undo removes the head, collection and all
    assert "UV-IDM" not in bpy.context.scene.collection.children
    bpy.ops.ed.redo()
    assert "t1" in bpy.context.scene.objects


@pytest.mark.parametrize("preset, suffix", [("UNITY", ".fbx"), ("UNREAL", ".fbx"), ("GLTF", ".glb")])
def test_export_for_game_engines(scene, result_folder, tmp_path, preset, suffix):
    bpy.ops.uvidm.import_recent(path=str(result_folder))
    target = tmp_path / f"head_{preset.lower()}.bin"
    assert bpy.ops.uvidm.export_game(preset=preset, filepath=str(target)) == {"FINISHED"}
    written = target.with_suffix(suffix)  # the extension follows the preset
    assert written.is_file() and written.stat().st_size > 1000
    assert bpy.context.window_manager.uvidm.message == f"Exported {written.name} for {preset.title()} to {tmp_path}"
    expected = _head().dimensions.z
    bpy.ops.wm.read_homefile(use_empty=True)
    if suffix == ".glb":
        bpy.ops.import_scene.gltf(filepath=str(written))
    else:
        bpy.ops.import_scene.fbx(filepath=str(written))
    mesh = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    world = [mesh.matrix_world @ v.co for v in mesh.data.vertices]
    height = max(v.z for v in world) - min(v.z for v in world)
    assert height == pytest.approx(expected, rel=1e-3)  # round trip: still the same head, +Z up


def test_export_conventions(addon):
    presets = sys.modules[f"{addon}.uvidm_blender.operators"].EXPORT_PRESETS
    unity, unreal, gltf = presets["UNITY"][1], presets["UNREAL"][1], presets["GLTF"][1]
    assert (unity["axis_up"], unity["axis_forward"], unity["bake_space_transform"]) == ("Y", "-Z", True)
    assert unity["apply_scale_options"] == "FBX_SCALE_ALL"
    assert unreal["apply_scale_options"] == "FBX_SCALE_NONE" and unreal["apply_unit_scale"]
    assert gltf["export_format"] == "GLB" and gltf["export_yup"]


def test_render_shows_the_texture(scene, result_folder, tmp_path, render):
    """Cycles, CPU, a few samples: the head covers the middle of the frame in the albedo's colour."""
    from PIL import Image

    with Image.open(result_folder / "albedo.png") as albedo:  # one colour, easy to find in the frame
        Image.new("RGB", albedo.size, (30, 200, 40)).save(result_folder / "albedo.png")
    bpy.ops.uvidm.import_recent(path=str(result_folder))
    head = _head()
    world = [head.matrix_world @ v.co for v in head.data.vertices]
    centre = sum(world, start=world[0] * 0) / len(world)
    image = render(scene, tmp_path / "frame.png", (centre.x, centre.y - 0.5, centre.z), light_energy=3.0)
    middle = [image.getpixel((x, y)) for x in range(24, 40) for y in range(24, 40)]
    assert sum(g > 1.5 * r and g > 1.5 * b and g > 40 for r, g, b in middle) > 0.9 * len(middle)
    corners = [image.getpixel((0, 0)), image.getpixel((63, 63))]
    assert all(abs(r - g) < 20 and abs(g - b) < 20 for r, g, b in corners)  # the world background, not the head

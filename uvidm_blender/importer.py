"""Build the head in the scene from a result folder: mesh, UV map, textured material, collection.

The mesh comes from head.obj through our own reader (results.parse_obj): names, the UV map and
the material stay ours, independent of the glTF add-on's version. A lone .glb (no head.obj
beside it) goes through Blender's glTF importer and gets the same material treatment.
Both files are in metres with +Y up (glTF conventions); Blender is +Z up: (x, y, z) -> (x, -z, y),
so the face, towards +Z in the file, looks towards -Y, Blender's front view. The head goes beside
what the scene already shows (never inside the default cube), selected, and the views frame it.
"""

from pathlib import Path

import bpy
from mathutils import Vector

from .results import ResultFolder, parse_obj

COLLECTION = "UV-IDM"
ROUGHNESS = 0.6


def _y_up_to_z_up(vertex: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = vertex
    return (x, -z, y)


def mesh_from_obj(name: str, obj_path: Path) -> bpy.types.Mesh:
    data = parse_obj(obj_path.read_text(encoding="utf-8", errors="replace"))
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([_y_up_to_z_up(v) for v in data.vertices], [], [list(face) for face in data.faces])
    if data.uvs:
        uv_layer = mesh.uv_layers.new(name="UVMap")
        flat: list[float] = []
        for face, face_uv in zip(data.faces, data.face_uvs, strict=True):
            for corner in range(len(face)):
                flat.extend(data.uvs[face_uv[corner]] if face_uv is not None else (0.0, 0.0))
        uv_layer.data.foreach_set("uv", flat)
    mesh.validate(clean_customdata=False)
    _shade_smooth(mesh)
    mesh.update()
    return mesh


def _shade_smooth(mesh: bpy.types.Mesh) -> None:
    if hasattr(mesh, "shade_smooth"):  # Blender 4.1+
        mesh.shade_smooth()
    else:
        mesh.polygons.foreach_set("use_smooth", [True] * len(mesh.polygons))


def build_material(name: str, albedo: Path | None) -> bpy.types.Material:
    """Principled BSDF with the albedo (sRGB) on Base Color, roughness 0.6."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; 5.0 materials always have nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (300, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (0, 0)
    bsdf.inputs["Roughness"].default_value = ROUGHNESS
    links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    material.roughness = ROUGHNESS  # viewport (solid mode) value
    if albedo is not None:
        image = bpy.data.images.load(str(albedo), check_existing=True)
        image.colorspace_settings.name = "sRGB"
        texture = nodes.new("ShaderNodeTexImage")
        texture.location = (-350, 0)
        texture.image = image
        links.new(texture.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def _collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    collection = bpy.data.collections.get(COLLECTION)
    if collection is None or collection.library is not None:
        collection = bpy.data.collections.new(COLLECTION)
    if collection not in scene.collection.children_recursive:
        scene.collection.children.link(collection)
    return collection


def _objects_from_glb(context, glb: Path) -> list[bpy.types.Object]:
    before = set(bpy.data.objects)
    bpy.ops.import_scene.gltf(filepath=str(glb))
    return [obj for obj in bpy.data.objects if obj not in before]


def _world_bounds(objects) -> tuple[Vector, Vector] | None:
    """The world-space box around the objects' bounding boxes (None for none)."""
    corners = [obj.matrix_world @ Vector(corner) for obj in objects for corner in obj.bound_box]
    if not corners:
        return None
    return (Vector([min(c[i] for c in corners) for i in range(3)]),
            Vector([max(c[i] for c in corners) for i in range(3)]))


def place_beside_scene(context, obj: bpy.types.Object) -> None:
    """Put the head to the right of what the scene shows (a gap of half its width), centred on it in
    depth and height; in an empty scene at the 3D cursor."""
    others = [o for o in context.view_layer.objects if o is not obj and o.visible_get()
              and o.type in ("MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME", "GPENCIL", "GREASEPENCIL")]
    scene_box = _world_bounds(others)
    obj.location = context.scene.cursor.location.copy()
    if scene_box is None:
        return
    context.view_layer.update()
    low, high = _world_bounds([obj])
    size = high - low
    offset = obj.location - (low + high) / 2  # from the head's box centre to its origin
    centre = Vector((scene_box[1].x + size.x, (scene_box[0].y + scene_box[1].y) / 2,
                     (scene_box[0].z + scene_box[1].z) / 2))
    obj.location = centre + offset


def frame_in_views(context, obj: bpy.types.Object) -> None:
    """Frame the selected head in every 3D view of the window (nothing to frame without a window)."""
    window = context.window
    if bpy.app.background or window is None or window.screen is None:
        return
    for area in window.screen.areas:
        if area.type != "VIEW_3D":
            continue
        region = next((r for r in area.regions if r.type == "WINDOW"), None)
        if region is not None:
            with context.temp_override(window=window, area=area, region=region):
                bpy.ops.view3d.view_selected(use_all_regions=False)


def import_result(context, path, name: str | None = None) -> bpy.types.Object:
    """Add the head of the result at `path` (a folder, head.obj, head.glb or result.json) beside what the
    scene holds, selected and active, and frame it in the 3D views."""
    result = ResultFolder.from_path(path)
    name = name or result.name
    scene = context.scene
    collection = _collection(scene)
    if result.obj is not None:
        obj = bpy.data.objects.new(name, mesh_from_obj(name, result.obj))
        collection.objects.link(obj)
    else:
        imported = _objects_from_glb(context, result.glb)
        meshes = [o for o in imported if o.type == "MESH"]
        if not meshes:
            for other in imported:
                bpy.data.objects.remove(other)
            raise ValueError(f"{result.glb.name} holds no mesh")
        obj = meshes[0]
        for other in imported:  # the head is one mesh; drop empties the importer adds around it
            if other is not obj:
                bpy.data.objects.remove(other)
        obj.parent = None
        for owner in list(obj.users_collection):
            owner.objects.unlink(obj)
        collection.objects.link(obj)
        obj.name = name
        obj.data.name = name
        _shade_smooth(obj.data)
    if result.albedo is not None or not obj.data.materials:
        obj.data.materials.clear()
        obj.data.materials.append(build_material(f"{name} skin", result.albedo))
    elif not result.full_head:  # the full head's eyes and teeth keep their own roughness
        for material in obj.data.materials:
            if material and material.node_tree and (bsdf := material.node_tree.nodes.get("Principled BSDF")):
                bsdf.inputs["Roughness"].default_value = ROUGHNESS
    unit = scene.unit_settings.scale_length or 1.0
    obj.scale = (1.0 / unit,) * 3  # the file is in metres; a scene unit of 1 cm needs 100 units per metre
    obj["uvidm_result"] = str(result.path)
    obj["uvidm_file"] = (result.obj or result.glb).name
    place_beside_scene(context, obj)
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    frame_in_views(context, obj)
    return obj


def register() -> None:
    pass


def unregister() -> None:
    pass

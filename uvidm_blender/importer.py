"""Build the head in the scene from a result folder: mesh, UV map, textured material, collection.

The mesh comes from head.obj through our own reader (results.parse_obj): names, the UV map and
the material stay ours, independent of the glTF add-on's version. A lone .glb (no head.obj
beside it) goes through Blender's glTF importer and gets the same material treatment.
Both files are in metres with +Y up (glTF conventions); Blender is +Z up: (x, y, z) -> (x, -z, y),
so the face, towards +Z in the file, looks towards -Y, Blender's front view.
"""

from pathlib import Path

import bpy

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


def import_result(context, path, name: str | None = None) -> bpy.types.Object:
    """Add the head of the result at `path` (a folder, head.obj, head.glb or result.json) at the 3D cursor."""
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
    obj.location = scene.cursor.location.copy()
    unit = scene.unit_settings.scale_length or 1.0
    obj.scale = (1.0 / unit,) * 3  # the file is in metres; a scene unit of 1 cm needs 100 units per metre
    obj["uvidm_result"] = str(result.path)
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


def register() -> None:
    pass


def unregister() -> None:
    pass

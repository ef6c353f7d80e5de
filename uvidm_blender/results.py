"""Result folders (docs/API.md, "Output folder") and the OBJ/MTL reader, standard library only.

The importer builds the Blender mesh from `head.obj` with this reader rather than through the
glTF importer: the names, the UV map and the material are then ours, whatever the glTF
add-on's version does with node trees, and the OBJ is plain text a test can check.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_JSON = "result.json"
FULL_HEAD_GLB = "head_full.glb"  # the ICT full head (`--head full|both`)


class ResultError(Exception):
    """A folder or file that is not (or no longer) a usable result, in words for the user."""


@dataclass
class ObjMesh:
    """Positions, texture coordinates and normals as written, faces as 0-based index tuples.

    `face_uvs[i]` / `face_normals[i]` are None for a face without them. Coordinates are as in
    the file (OBJ convention: +Y up); the importer converts to Blender's +Z up.
    """

    vertices: list[tuple[float, float, float]] = field(default_factory=list)
    uvs: list[tuple[float, float]] = field(default_factory=list)
    normals: list[tuple[float, float, float]] = field(default_factory=list)
    faces: list[tuple[int, ...]] = field(default_factory=list)
    face_uvs: list[tuple[int, ...] | None] = field(default_factory=list)
    face_normals: list[tuple[int, ...] | None] = field(default_factory=list)
    face_materials: list[str | None] = field(default_factory=list)
    mtllibs: list[str] = field(default_factory=list)


def _index(token: str, count: int, line_no: int) -> int:
    value = int(token)
    if value == 0:
        raise ResultError(f"OBJ line {line_no}: index 0 (OBJ indices start at 1)")
    index = value - 1 if value > 0 else count + value
    if not 0 <= index < count:
        raise ResultError(f"OBJ line {line_no}: index {value} out of range (1..{count})")
    return index


def parse_obj(text: str) -> ObjMesh:
    """Read the subset of Wavefront OBJ that mesh exporters write: v, vt, vn, f, usemtl, mtllib."""
    mesh = ObjMesh()
    material: str | None = None
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        parts = rest.split()
        try:
            if keyword == "v":
                x, y, z = (float(v) for v in parts[:3])
                mesh.vertices.append((x, y, z))
            elif keyword == "vt":
                mesh.uvs.append((float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0))
            elif keyword == "vn":
                x, y, z = (float(v) for v in parts[:3])
                mesh.normals.append((x, y, z))
            elif keyword == "f":
                if len(parts) < 3:
                    raise ResultError(f"OBJ line {line_no}: a face needs at least three corners")
                corners = [corner.split("/") for corner in parts]
                mesh.faces.append(tuple(_index(c[0], len(mesh.vertices), line_no) for c in corners))
                has_uv = all(len(c) > 1 and c[1] for c in corners)
                has_normal = all(len(c) > 2 and c[2] for c in corners)
                mesh.face_uvs.append(tuple(_index(c[1], len(mesh.uvs), line_no) for c in corners)
                                     if has_uv else None)
                mesh.face_normals.append(tuple(_index(c[2], len(mesh.normals), line_no) for c in corners)
                                         if has_normal else None)
                mesh.face_materials.append(material)
            elif keyword == "usemtl":
                material = rest.strip() or None
            elif keyword == "mtllib":
                mesh.mtllibs.append(rest.strip())
        except (ValueError, IndexError) as error:
            raise ResultError(f"OBJ line {line_no}: cannot read {raw.strip()!r}") from error
    if not mesh.faces:
        raise ResultError("the OBJ file has no faces")
    return mesh


def parse_mtl(text: str) -> dict[str, dict[str, str]]:
    """Materials by name, each a dict of statement -> the rest of its line (map_Kd -> 'albedo.png')."""
    materials: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, _, rest = line.partition(" ")
        if keyword == "newmtl":
            current = materials.setdefault(rest.strip(), {})
        elif current is not None:
            if keyword.startswith("map_") or keyword in ("bump", "disp", "norm"):
                rest = _map_file(rest)
            current[keyword] = rest.strip()
    return materials


_VECTOR_OPTIONS = {"-o", "-s", "-t"}  # one to three numbers
_PAIR_OPTIONS = {"-mm"}


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _map_file(rest: str) -> str:
    """The file name of a texture statement, its options ("-s 1 1 1", "-clamp on") dropped."""
    tokens = rest.split()
    while len(tokens) > 1 and tokens[0].startswith("-") and not _is_number(tokens[0]):
        option = tokens.pop(0)
        if option in _VECTOR_OPTIONS:
            for _ in range(3):
                if len(tokens) > 1 and _is_number(tokens[0]):
                    tokens.pop(0)
        else:
            del tokens[:2 if option in _PAIR_OPTIONS else 1]
    return " ".join(tokens)


@dataclass(frozen=True)
class ResultFolder:
    """One head: the folder and the files in it that exist (None when absent).

    `name` names the head in the scene: the result folder's own name (unique, after the photo and the
    face: "t1-face3", "t1-face3-2"), or a lone file's. `photo_name`, `face_number` (1 = the left-most
    face, None when not recorded) and `created` (seconds since the epoch) describe it in the Results list.
    """

    path: Path
    name: str
    obj: Path | None
    glb: Path | None
    albedo: Path | None
    preview: Path | None
    metadata: dict[str, Any]
    photo_name: str | None = None
    face_number: int | None = None
    created: float = 0.0

    @property
    def title(self) -> str:
        """'t1.jpg, face 3' (or the name, for a head without its metadata)."""
        if not self.photo_name:
            return self.name
        return self.photo_name + (f", face {self.face_number}" if self.face_number else "")

    @property
    def full_head(self) -> bool:
        """The ICT full head (head_full.glb): its own materials and shape keys, not the albedo."""
        return self.obj is None and self.glb is not None and self.glb.name == FULL_HEAD_GLB

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ResultFolder:
        """A result folder, or any file in one (head.glb, head.obj, result.json), or a lone .glb/.obj."""
        path = Path(path).expanduser()
        if not path.exists():
            raise ResultError(f"{path} does not exist")
        if path.is_dir():
            folder, chosen = path, None
        elif path.suffix.lower() in (".glb", ".gltf", ".obj", ".json", ".png", ".mtl"):
            folder, chosen = path.parent, path
        else:
            raise ResultError(f"{path.name} is not a UV-IDM result: choose a result folder, a .glb or an .obj")

        def existing(name: str) -> Path | None:
            candidate = folder / name
            return candidate if candidate.is_file() else None

        obj = existing("head.obj")
        glb = existing("head.glb") or (existing(FULL_HEAD_GLB) if obj is None else None)
        if chosen is not None and chosen.suffix.lower() == ".obj":
            obj, glb = chosen, None
        elif chosen is not None and chosen.suffix.lower() in (".glb", ".gltf"):
            obj, glb = None, chosen
        if obj is None and glb is None:
            raise ResultError(f"{folder} holds no head.obj or head.glb; is it a UV-IDM result folder?")
        metadata: dict[str, Any] = {}
        if (meta_file := existing(RESULT_JSON)) is not None:
            try:
                metadata = json.loads(meta_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise ResultError(f"{meta_file} cannot be read ({error}); the result may be damaged") from error
        albedo = existing("albedo.png") if glb is None or glb.name != FULL_HEAD_GLB else None
        if albedo is None and obj is not None:
            albedo = _texture_from_mtl(obj)
        photo = metadata.get("photo") if isinstance(metadata.get("photo"), dict) else {}
        face = metadata.get("face") if isinstance(metadata.get("face"), dict) else {}
        if chosen is not None and chosen.stem not in ("head", "head_full", "result", "albedo"):
            name = chosen.stem
        else:
            name = folder.name
        index = face.get("index")
        return cls(path=folder, name=name or "head", obj=obj, glb=glb, albedo=albedo,
                   preview=existing("preview.png"), metadata=metadata, photo_name=photo.get("name"),
                   face_number=index + 1 if isinstance(index, int) else None,
                   created=(meta_file or obj or glb).stat().st_mtime)


def result_name(photo_stem: str, face_index: int | None) -> str:
    """A result folder's name: the photo's, and the face's number (1 = the left-most) when known."""
    return photo_stem if face_index is None else f"{photo_stem}-face{face_index + 1}"


def _texture_from_mtl(obj: Path) -> Path | None:
    """The map_Kd of the OBJ's material library, resolved next to the OBJ."""
    try:
        mesh_libs = [line.split(None, 1)[1].strip() for line in obj.read_text(encoding="utf-8").splitlines()
                     if line.startswith("mtllib ")]
    except (OSError, UnicodeDecodeError):
        return None
    for lib in mesh_libs:
        mtl = obj.parent / lib
        if not mtl.is_file():
            continue
        for material in parse_mtl(mtl.read_text(encoding="utf-8", errors="replace")).values():
            if "map_Kd" in material:
                texture = obj.parent / material["map_Kd"]
                if texture.is_file():
                    return texture
    return None


def is_result_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (
        (path / "head.obj").is_file() or (path / "head.glb").is_file() or (path / FULL_HEAD_GLB).is_file())


def recent_results(root: str | os.PathLike[str], limit: int = 10) -> list[Path]:
    """Result folders directly in `root`, newest first; hidden (partial) folders skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    folders = [entry for entry in root.iterdir() if is_result_folder(entry)]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return folders[:limit]


def unique_folder(root: str | os.PathLike[str], name: str) -> Path:
    """root/name, or root/name-2, -3, ... : a result never overwrites an earlier one."""
    root = Path(root)
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "head"
    candidate = root / safe
    number = 2
    while os.path.lexists(candidate):
        candidate = root / f"{safe}-{number}"
        number += 1
    return candidate

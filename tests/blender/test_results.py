"""Result folders and the OBJ/MTL reader (no Blender needed)."""

import json
import os
import shutil
import time

import pytest

from uvidm_blender.results import (
    ResultError,
    ResultFolder,
    parse_mtl,
    parse_obj,
    recent_results,
    result_name,
    unique_folder,
)

OBJ = """# a quad and a triangle, with every kind of corner
mtllib head.mtl
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vn 0 0 1
usemtl skin
f 1/1/1 2/2/1 3/3/1 4/4/1
f -4//-1 -3//-1 -2//-1
f 1 2 4
"""


def test_parse_obj_corners_and_negative_indices():
    mesh = parse_obj(OBJ)
    assert len(mesh.vertices) == 4 and len(mesh.uvs) == 4 and len(mesh.normals) == 1
    assert mesh.faces == [(0, 1, 2, 3), (0, 1, 2), (0, 1, 3)]
    assert mesh.face_uvs == [(0, 1, 2, 3), None, None]
    assert mesh.face_normals == [(0, 0, 0, 0), (0, 0, 0), None]
    assert mesh.face_materials == ["skin", "skin", "skin"]
    assert mesh.mtllibs == ["head.mtl"]


@pytest.mark.parametrize("text, message", [
    ("v 0 0 0\nf 1 2 3\n", "out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "index 0"),
    ("v 0 0\n", "cannot read"),
    ("v 0 0 0\n", "no faces"),
])
def test_parse_obj_refuses_broken_files(text, message):
    with pytest.raises(ResultError, match=message):
        parse_obj(text)


def test_parse_mtl():
    materials = parse_mtl("newmtl skin\nKd 1 1 1\nmap_Kd -s 1 1 1 -clamp on albedo.png\n# x\nnewmtl eye\nKd 0 0 0\n")
    assert materials == {"skin": {"Kd": "1 1 1", "map_Kd": "albedo.png"}, "eye": {"Kd": "0 0 0"}}


def test_result_folder_from_any_of_its_files(result_folder):
    for path in (result_folder, result_folder / "head.obj", result_folder / "result.json"):
        result = ResultFolder.from_path(path)
        assert result.path == result_folder and result.name == "t1"  # the folder's name
        assert result.photo_name == "t1.jpg" and result.title == "t1.jpg"  # landmarks given, no face number
        assert abs(result.created - (result_folder / "result.json").stat().st_mtime) < 1e-6
        assert result.obj == result_folder / "head.obj"
        assert result.albedo == result_folder / "albedo.png"
        assert result.preview == result_folder / "preview.png"
    glb = ResultFolder.from_path(result_folder / "head.glb")
    assert glb.glb == result_folder / "head.glb" and glb.obj is None  # the file chosen is the file imported


def test_lone_files_and_bad_paths(tmp_path, result_folder):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "face.obj").write_text((result_folder / "head.obj").read_text())
    (lone / "head.mtl").write_text("newmtl skin\nmap_Kd skin.png\n")
    (lone / "skin.png").write_bytes((result_folder / "albedo.png").read_bytes())
    result = ResultFolder.from_path(lone / "face.obj")
    assert result.name == "face" and result.albedo == lone / "skin.png"  # the texture comes from the MTL
    with pytest.raises(ResultError, match="does not exist"):
        ResultFolder.from_path(tmp_path / "nothing")
    with pytest.raises(ResultError, match="no head.obj or head.glb"):
        ResultFolder.from_path(tmp_path)
    (result_folder / "result.json").write_text("{broken")
    with pytest.raises(ResultError, match="damaged"):
        ResultFolder.from_path(result_folder)


def test_recent_results_newest_first_without_partial_folders(tmp_path, served_result):
    old = shutil.copytree(served_result, tmp_path / "old")
    new = shutil.copytree(served_result, tmp_path / "new")
    shutil.copytree(served_result, tmp_path / ".new.partial-1234")  # a download in progress
    (tmp_path / "empty").mkdir()
    now = time.time()
    os.utime(old, (now - 100, now - 100))
    os.utime(new, (now, now))
    assert recent_results(tmp_path) == [new, old]
    assert recent_results(tmp_path, limit=1) == [new]
    assert recent_results(tmp_path / "missing") == []


def test_unique_folder_never_reuses_a_name(tmp_path):
    assert unique_folder(tmp_path, "my photo") == tmp_path / "my_photo"
    (tmp_path / "my_photo").mkdir()
    (tmp_path / "my_photo-2").mkdir()
    assert unique_folder(tmp_path, "my photo") == tmp_path / "my_photo-3"
    assert unique_folder(tmp_path, "../..") == tmp_path / "head"


def test_names_and_titles_after_photo_and_face(result_folder):
    assert result_name("t1", None) == "t1" and result_name("t1", 2) == "t1-face3"
    meta = json.loads((result_folder / "result.json").read_text())
    meta["face"]["index"] = 2
    (result_folder / "result.json").write_text(json.dumps(meta))
    result = ResultFolder.from_path(result_folder)
    assert (result.title, result.face_number) == ("t1.jpg, face 3", 3)
    (result_folder / "result.json").write_text(json.dumps({"version": "x"}))
    assert ResultFolder.from_path(result_folder).title == "t1"  # without its metadata: the folder's name

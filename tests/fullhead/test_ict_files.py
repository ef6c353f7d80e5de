"""Reading ICT FaceKit files (the synthetic fixture in the ICT layout) and the cache."""

import os

import numpy as np
import pytest

from uvidm_backend.devtools.ict_fixture import EXPRESSIONS, IDENTITY_COUNT
from uvidm_backend.fullhead.ict_files import CACHE_FILE, ICTFileError, convert_ict_folder, load_ict_model


def test_reads_the_ict_layout(ict_folder):
    model = convert_ict_folder(ict_folder)
    text = (ict_folder / "generic_neutral_mesh.obj").read_text().splitlines()
    polygons = [line.split()[1:] for line in text if line.startswith("f ")]
    assert {len(p) for p in polygons} == {3, 4}  # quads and triangles, as in ICT
    assert len(model.triangles) == sum(len(p) - 2 for p in polygons)
    assert model.n_vertices == sum(line.startswith("v ") for line in text)
    assert len(model.uv) == sum(line.startswith("vt ") for line in text)
    first = [int(corner.split("/")[0]) - 1 for corner in polygons[0]]
    np.testing.assert_array_equal(model.triangles[0], first[:3])  # 1-based corners, fans from corner 0
    assert model.expression_names == EXPRESSIONS and model.expressions.shape == (53, model.n_vertices, 3)
    assert model.identity.shape == (IDENTITY_COUNT, model.n_vertices, 3)
    assert len(model.landmarks) == 68 and {"M_Face", "M_BackHead", "M_ScleraLeft", "M_IrisRight",
                                          "M_Teeth", "M_GumsTongue", "M_EyeLashes"} <= set(model.material_names)
    jaw = (ict_folder / "jawOpen.obj").read_text().splitlines()
    moved = np.array([line.split()[1:] for line in jaw if line.startswith("v ")], float)
    np.testing.assert_allclose(model.expressions[EXPRESSIONS.index("jawOpen")], moved - model.neutral, atol=1e-5)


def test_cache_is_read_back_and_follows_the_files(tmp_path, ict_folder):
    cache = tmp_path / "cache"
    cache.mkdir()
    converted = load_ict_model(ict_folder, cache)
    assert (cache / CACHE_FILE).is_file()
    cached = load_ict_model(ict_folder, cache)
    for name in ("neutral", "triangles", "triangle_uv", "identity", "expressions", "landmarks"):
        np.testing.assert_array_equal(getattr(cached, name), getattr(converted, name))
    assert cached.material_names == converted.material_names
    # a changed file makes the cache stale: the next load converts again
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in ict_folder.iterdir():
        if path.suffix != ".npz":
            (changed / path.name).write_bytes(path.read_bytes())
    lines = (changed / "identity000.obj").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("v "))
    lines[first] = "v 9 9 9"
    (changed / "identity000.obj").write_text("\n".join(lines))
    os.utime(changed / "identity000.obj", ns=(1, 1))
    load_ict_model(changed, cache)
    assert not np.array_equal(load_ict_model(changed, cache).identity[0], converted.identity[0])


def test_a_broken_file_is_named(tmp_path, ict_folder):
    for path in ict_folder.iterdir():
        if path.suffix != ".npz":  # the model files, not caches other tests left
            (tmp_path / path.name).write_bytes(path.read_bytes())
    lines = (tmp_path / "eyeBlink_L.obj").read_text().splitlines()
    (tmp_path / "eyeBlink_L.obj").write_text("\n".join(line for line in lines if not line.startswith("v ")))
    with pytest.raises(ICTFileError, match="eyeBlink_L.obj: has no vertices"):
        load_ict_model(tmp_path)
    assert not (tmp_path / CACHE_FILE).exists()

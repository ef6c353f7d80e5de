"""Loading the BFM folder: conventions, and errors that name the file and what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from geometry.bfm_fixture import synthetic_arrays, write_bfm_files

from uvidm_backend.geometry import bfm_files
from uvidm_backend.geometry.bfm_files import BFMFileError, ModelFileError, load_bfm, load_morphable_model


@pytest.fixture()
def arrays() -> dict[str, np.ndarray]:
    return synthetic_arrays()


@pytest.fixture()
def folder(arrays, tmp_path):
    return write_bfm_files(arrays, tmp_path / "BFM")


def test_loads_with_zero_based_indices(arrays, folder):
    bfm = load_bfm(folder)
    n = arrays["bfm_uv"].shape[0]
    assert bfm.full.n_vertices == n and bfm.uv.shape == (n, 2)
    assert bfm.full.mean_shape.shape == (3 * n,) and bfm.full.id_base.shape == (3 * n, 80)
    np.testing.assert_array_equal(bfm.full.triangles, arrays["bfm5w_tri"] - 1)
    np.testing.assert_array_equal(bfm.full_triangles, arrays["full_triangles"])
    np.testing.assert_array_equal(bfm.front_idx, arrays["front_idx_1based"] - 1)
    # the two point_buf conventions of the official code (trap 2), both 0-based padded with F here
    assert (bfm.full.point_buf_base, bfm.front.point_buf_base) == (0, 1)
    np.testing.assert_array_equal(bfm.full.point_buf, arrays["bfm5w_point_buf"])
    np.testing.assert_array_equal(bfm.front.point_buf, arrays["bfmfront_point_buf"] - 1)
    assert bfm.front.point_buf.max() == bfm.front.triangles.shape[0]
    assert bfm.front.keypoints is None
    assert bfm.lm3d.shape == (68, 3)
    assert bfm.triangle_buffer.dtype == np.int64 and bfm.barycentric_weight.shape[-1] == 3


def test_optional_parts(arrays, folder):
    for name in (bfm_files.FRONT_MODEL_FILE, bfm_files.LANDMARKS_FILE, bfm_files.TRIANGLE_BUFFER_FILE,
                 bfm_files.BARYCENTRIC_WEIGHT_FILE):
        (folder / name).unlink()
    bfm = load_bfm(folder, front_model=False, landmarks=False)
    assert bfm.front is None and bfm.lm3d is None and bfm.triangle_buffer is None
    np.testing.assert_array_equal(bfm.front_idx, arrays["front_idx_1based"] - 1)  # read when present
    (folder / bfm_files.FRONT_INDEX_FILE).unlink()
    assert load_bfm(folder, front_model=False, landmarks=False).front_idx is None


def test_indices_stored_as_double_and_keypoints(arrays, tmp_path):
    content = {key[len("bfmfront_"):]: value for key, value in arrays.items() if key.startswith("bfmfront_")}
    content["tri"] = content["tri"].astype(np.float64)
    content["keypoints"] = np.arange(1, 69, dtype=np.float64).reshape(-1, 1) % 20 + 1
    scipy.io.savemat(tmp_path / "model.mat", content)
    model = load_morphable_model(tmp_path / "model.mat")
    assert model.triangles.dtype == np.int64 and model.triangles_base == 1
    np.testing.assert_array_equal(model.keypoints, content["keypoints"].ravel().astype(np.int64) - 1)


@pytest.mark.parametrize("name", [bfm_files.FULL_MODEL_FILE, bfm_files.FRONT_MODEL_FILE, bfm_files.FRONT_INDEX_FILE,
                                  bfm_files.UV_FILE, bfm_files.FULL_TRIANGLES_FILE, bfm_files.LANDMARKS_FILE,
                                  bfm_files.BARYCENTRIC_WEIGHT_FILE])
def test_missing_file_is_named(folder, name):
    (folder / name).unlink()
    with pytest.raises(BFMFileError, match=name) as error:
        load_bfm(folder)
    assert isinstance(error.value, ModelFileError) and error.value.path.name == name
    assert "BFM/README.md" in str(error.value)


def test_missing_folder(tmp_path):
    with pytest.raises(BFMFileError, match="not found"):
        load_bfm(tmp_path / "nowhere")


def test_missing_key_is_named(arrays, folder):
    content = {key[len("bfm5w_"):]: value for key, value in arrays.items() if key.startswith("bfm5w_")}
    del content["idBase"]
    scipy.io.savemat(folder / bfm_files.FULL_MODEL_FILE, content)
    with pytest.raises(BFMFileError, match=rf"{bfm_files.FULL_MODEL_FILE}.*missing key 'idBase'"):
        load_bfm(folder)


def test_wrong_shape_is_named(arrays, folder):
    content = {key[len("bfmfront_"):]: value for key, value in arrays.items() if key.startswith("bfmfront_")}
    content["exBase"] = content["exBase"][:-3]
    scipy.io.savemat(folder / bfm_files.FRONT_MODEL_FILE, content)
    with pytest.raises(BFMFileError, match=rf"{bfm_files.FRONT_MODEL_FILE}.*'exBase' has shape"):
        load_bfm(folder)


def test_inconsistent_vertex_count_is_named(arrays, folder):
    np.save(folder / bfm_files.UV_FILE, np.vstack([arrays["bfm_uv"], [[0.5, 0.5]]]))
    with pytest.raises(BFMFileError, match=bfm_files.UV_FILE):
        load_bfm(folder)
    np.save(folder / bfm_files.UV_FILE, arrays["bfm_uv"])
    scipy.io.savemat(folder / bfm_files.FRONT_INDEX_FILE, {"idx": arrays["front_idx_1based"][:-1, None]})
    with pytest.raises(BFMFileError, match=rf"{bfm_files.FRONT_INDEX_FILE}.*'idx' has"):
        load_bfm(folder)


def test_out_of_range_indices(arrays, folder):
    scipy.io.savemat(folder / bfm_files.FULL_TRIANGLES_FILE, {"full_triangles": arrays["full_triangles"] + 1})
    with pytest.raises(BFMFileError, match=bfm_files.FULL_TRIANGLES_FILE):
        load_bfm(folder)


def test_unreadable_file(folder):
    (folder / bfm_files.FULL_TRIANGLES_FILE).write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(BFMFileError, match=bfm_files.FULL_TRIANGLES_FILE):
        load_bfm(folder)


def test_raster_shapes_must_match(arrays, folder):
    np.save(folder / bfm_files.BARYCENTRIC_WEIGHT_FILE, arrays["barycentric_weight"][:-1])
    with pytest.raises(BFMFileError, match=bfm_files.BARYCENTRIC_WEIGHT_FILE):
        load_bfm(folder)


# The bases the official code reads (trap 2 of the reference README): visualize.py's `tri - 1`,
# `point_buf - 1` (front) and `idx - 1`; Deep3dEncoder's whole-head `point_buf` and `full_triangles` as stored.
OFFICIAL_BASES = [("bfm5w_", "point_buf", 0), ("bfm5w_", "tri", 1), ("bfmfront_", "point_buf", 1),
                  ("bfmfront_", "tri", 1), ("", "full_triangles", 0), ("", "front_idx_1based", 1)]
FILES = {"bfm5w_": bfm_files.FULL_MODEL_FILE, "bfmfront_": bfm_files.FRONT_MODEL_FILE,
         "full_triangles": bfm_files.FULL_TRIANGLES_FILE, "front_idx_1based": bfm_files.FRONT_INDEX_FILE}
KEYS = {"front_idx_1based": "idx"}


def _rewrite(arrays, folder, prefix, key, shift):
    changed = dict(arrays)
    changed[prefix + key] = arrays[prefix + key] + shift
    write_bfm_files(changed, folder)
    return FILES[prefix or key], KEYS.get(key, key)


@pytest.mark.parametrize(("prefix", "key", "base"), OFFICIAL_BASES)
def test_an_index_array_in_the_other_base_is_refused_naming_file_and_array(arrays, folder, prefix, key, base):
    """One rule: the base the official code reads; a file converted to the other base is an error, not a guess."""
    file_name, array = _rewrite(arrays, folder, prefix, key, 1 if base == 0 else -1)
    with pytest.raises(BFMFileError, match=rf"{file_name}: '{array}' indices .* expected {base}-based") as error:
        load_bfm(folder)
    assert f"fit {1 - base}-based indices" in str(error.value)


@pytest.mark.parametrize(("prefix", "key", "base"), OFFICIAL_BASES)
def test_an_index_array_that_fits_neither_base_is_refused(arrays, folder, prefix, key, base):
    file_name, array = _rewrite(arrays, folder, prefix, key, 5)
    with pytest.raises(BFMFileError, match=rf"{file_name}: '{array}' .*fit neither 0- nor 1-based"):
        load_bfm(folder)


def test_the_loaded_indices_are_the_stored_ones_minus_the_official_base(arrays, folder):
    bfm = load_bfm(folder)
    np.testing.assert_array_equal(bfm.full.point_buf, arrays["bfm5w_point_buf"])
    np.testing.assert_array_equal(bfm.front.point_buf, arrays["bfmfront_point_buf"] - 1)
    np.testing.assert_array_equal(bfm.full.triangles, arrays["bfm5w_tri"] - 1)
    np.testing.assert_array_equal(bfm.full_triangles, arrays["full_triangles"])
    np.testing.assert_array_equal(bfm.front_idx, arrays["front_idx_1based"] - 1)

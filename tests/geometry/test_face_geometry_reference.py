"""Face model, camera and UV geometry against the official code (reference case `face_geometry`).

The synthetic BFM arrays of the archive are written as the official files and read back through
`load_bfm`; every `out_*` array of the archive is then recomputed through the public API.
"""

from __future__ import annotations

import numpy as np
import pytest
import refdata
import torch
from geometry.bfm_fixture import write_bfm_files

from uvidm_backend.geometry import camera, uv
from uvidm_backend.geometry.bfm_files import BFMData, load_bfm
from uvidm_backend.geometry.face_model import FaceModel, rotation

pytestmark = pytest.mark.reference

CASE = "face_geometry"
# `uv2vertices_torch` (UV map -> vertex colours): the product never reads colours back from a UV map.
NOT_REPRODUCED = {"uv2vertices_front", "uv2vertices_query"}


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return refdata.case_arrays(CASE)


@pytest.fixture(scope="module")
def bfm(arrays, tmp_path_factory) -> BFMData:
    return load_bfm(write_bfm_files(arrays, tmp_path_factory.mktemp("bfm")))


def compute_outputs(arrays: dict[str, np.ndarray], bfm: BFMData) -> dict[str, torch.Tensor | np.ndarray]:
    """Every output of the case, named as in the archive (without `out_`)."""
    t = {name: torch.from_numpy(value) for name, value in arrays.items() if name.startswith("in_")}
    full, front = FaceModel.whole_head(bfm), FaceModel.front_face(bfm)
    triangles = torch.from_numpy(bfm.full_triangles)
    triangle_buffer = torch.from_numpy(bfm.triangle_buffer)
    weight = torch.from_numpy(bfm.barycentric_weight)
    size = bfm.triangle_buffer.shape
    front_idx = torch.from_numpy(bfm.front_idx)
    out: dict[str, torch.Tensor | np.ndarray] = {}

    out["shape_5w"], out["id_shape_5w"] = full.compute_shape(t["in_id"], t["in_exp"])
    out["shape_front"], out["id_shape_front"] = front.compute_shape(t["in_id"], t["in_exp"])
    out["texture_5w"] = full.compute_texture(t["in_tex"])
    out["texture_front"] = front.compute_texture(t["in_tex"])
    out["texture_front_unnormalized"] = front.compute_texture(t["in_tex"], normalize=False)
    out["norm_front"] = front.compute_norm(out["shape_front"])
    out["norm_5w"] = full.compute_norm(out["shape_5w"])
    out["R"] = rotation(t["in_angle"])
    out["T"] = t["in_trans"].clone()
    out["norm_front_rot"] = out["norm_front"] @ out["R"]
    out["color_front"] = front.compute_color(out["texture_front"], out["norm_front_rot"], t["in_gamma"],
                                             t["in_init_lit"])

    texture = out["texture_5w"].clone()
    texture[:, front_idx] = out["color_front"]
    out["vis_texture_5w_overwritten"] = texture
    out["process_uv"] = uv.process_uv(bfm.uv, *size)
    out["process_uv_256"] = uv.process_uv(bfm.uv)
    out["vis_uv_color_map"] = uv.render_vertex_colors_uv(texture, triangles, triangle_buffer, weight)
    out["render_colors"] = uv.render_vertex_colors_uv(t["in_render_colors"], triangles, triangle_buffer, weight)

    out["persc_proj"] = camera.perspective_projection()
    shape, rot, trans = out["shape_5w"][:1], out["R"][:1], out["T"][:1]
    out["vertices_camera"] = camera.to_camera(shape, rot, trans)
    out["vertices_proj_h"] = out["vertices_camera"] @ out["persc_proj"]
    out["projXY_224"] = camera.project(out["vertices_camera"])
    out["norm_5w_rot"] = out["norm_5w"][:1] @ rot
    out["projXY_ori"] = camera.projXY_to_original(out["projXY_224"], t["in_trans_params"])
    # the NumPy version computes in float64, the truncated size included (trap 5)
    out["projXY_ori_numpy"] = camera.projXY_to_original(out["projXY_224"].double(),
                                                        t["in_trans_params"].double())[0].float()

    out["unwrap_uv_idx_v_idx"] = uv.uv_vertex_index(triangles, triangle_buffer)
    out["remap_tex"], out["remap_mask"] = uv.remap_texture_from_image(
        t["in_image"], out["projXY_ori"], out["norm_5w_rot"], t["in_seg_mask"], out["unwrap_uv_idx_v_idx"],
        weight)
    return out


def test_every_output(arrays, bfm):
    outputs = compute_outputs(arrays, bfm)
    expected = {name[len("out_"):]: value for name, value in arrays.items()
                if name.startswith("out_") and name[len("out_"):] not in NOT_REPRODUCED}
    missing = sorted(set(expected) - set(outputs))
    assert not missing, f"outputs of the archive not computed: {missing}"
    for name, reference in expected.items():
        actual = torch.as_tensor(outputs[name])
        assert tuple(actual.shape) == reference.shape, name
        if np.issubdtype(reference.dtype, np.integer):
            assert actual.dtype == torch.int64, name
            assert torch.equal(actual, torch.from_numpy(reference)), name
        else:
            refdata.assert_close(actual, reference, what=name)


def test_loader_sizes(arrays, bfm):
    """The loaded model matches the archive's arrays (0-based conventions of trap 2)."""
    assert bfm.full.n_vertices * 3 == arrays["bfm5w_meanshape"].size
    for model, prefix in ((bfm.full, "bfm5w_"), (bfm.front, "bfmfront_")):
        np.testing.assert_array_equal(model.point_buf + model.point_buf_base, arrays[prefix + "point_buf"])
        np.testing.assert_array_equal(model.triangles + model.triangles_base, arrays[prefix + "tri"])
        assert model.point_buf.max() == model.triangles.shape[0]  # padding = the appended zero face
    np.testing.assert_array_equal(bfm.front_idx, arrays["front_idx_1based"] - 1)
    np.testing.assert_array_equal(bfm.full_triangles, arrays["full_triangles"])

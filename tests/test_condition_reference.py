"""The whole condition path (official `Deep3dEncoder`) against the deep3d_encoder reference case."""

import pytest
import refdata
import torch
import torch.nn.functional as F
from geometry.bfm_fixture import write_bfm_files

from uvidm_backend.condition import ConditionStage
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.camera import project, to_camera
from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.geometry.uv import uv_vertex_index
from uvidm_backend.models.bisenet import BiSeNet
from uvidm_backend.models.condition_fuser import ConditionFuser
from uvidm_backend.models.recon_net import ReconNet

pytestmark = [pytest.mark.reference, pytest.mark.slow]
CASE = "deep3d_encoder"
# Official submodule names of Deep3dEncoder -> ours.
COMPONENTS = {"recon_net.": "recon_net", "seg_model.": "seg_model", "conditionfuser.": "condition_fuser"}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    arrays = refdata.case_arrays(CASE)
    folder = write_bfm_files(arrays, tmp_path_factory.mktemp("bfm"))
    bfm = load_bfm(folder, front_model=False, landmarks=False)
    weights = refdata.make_weights(refdata.read_json(f"{CASE}_manifest.json"), refdata.case_meta(CASE)["weight_seed"])
    modules = {"recon_net": ReconNet(), "seg_model": BiSeNet(), "condition_fuser": ConditionFuser()}
    for prefix, name in COMPONENTS.items():
        part = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
        modules[name].load_state_dict(part, strict=True)
    face_model = FaceModel.whole_head(bfm)
    triangle_buffer = torch.from_numpy(bfm.triangle_buffer)
    stage = ConditionStage(**modules, face_model=face_model,
                           uv_vertex_index=uv_vertex_index(face_model.triangles, triangle_buffer),
                           barycentric_weight=torch.from_numpy(bfm.barycentric_weight)).eval()
    inputs = [torch.from_numpy(arrays[key]) for key in ("in_x", "in_x_ori", "in_transM")]
    return stage, inputs, arrays, stage(*inputs)


def test_context_tokens(case):
    _, _, arrays, condition = case
    refdata.assert_close(condition.tokens, arrays["out_c"], what="out_c")


def test_coefficients(case):
    _, _, arrays, condition = case
    for name, value in condition.coefficients.as_dict().items():
        refdata.assert_close(value, arrays[f"out_coeff_{name}"], what=name)


def test_geometry_and_partial_texture(case):
    stage, (_, photo, _), arrays, condition = case
    coefficients = condition.coefficients
    shape, _ = stage.face_model.compute_shape(coefficients.id, coefficients.exp)
    rotation = stage.face_model.rotation(coefficients.angle)
    refdata.assert_close(shape, arrays["out_face_shape"], what="face shape")
    refdata.assert_close(project(to_camera(shape, rotation, coefficients.trans)), arrays["out_projXY_224"],
                         what="projXY_224")
    refdata.assert_close(stage.face_model.compute_norm(shape) @ rotation, arrays["out_norm_rot"], what="normals")
    refdata.assert_close(condition.projected, arrays["out_projXY_ori"], what="projXY_ori")
    refdata.assert_close(condition.partial_texture * 2 - 1, arrays["out_remap_tex_scaled"], what="remap_tex")
    seg_input = F.interpolate((photo + 1) * 0.5, tuple(arrays["out_seg_input_512"].shape[-2:]))
    refdata.assert_close(seg_input, arrays["out_seg_input_512"], what="parsing input")


def test_parsing_labels_agree_except_near_ties(case):
    stage, (_, photo, _), arrays, _ = case
    logits = stage.seg_model(torch.from_numpy(arrays["out_seg_input_512"]))[0]
    top2 = logits.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > 1e-4
    labels = logits.argmax(dim=1)
    expected = torch.from_numpy(arrays["out_seg_argmax_512"])
    assert torch.equal(labels[decided], expected[decided])
    assert decided.float().mean() > 0.99

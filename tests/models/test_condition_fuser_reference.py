"""ConditionFuser against the official reference vectors (case condition_fuser)."""

from __future__ import annotations

import pytest
import refdata
import torch

from uvidm_backend.models.condition_fuser import ConditionFuser

pytestmark = pytest.mark.reference

CASE = "condition_fuser"


@pytest.fixture(scope="module")
def fuser() -> ConditionFuser:
    model = ConditionFuser().eval()
    model.load_state_dict(refdata.case_weights(CASE), strict=True)
    return model


def test_state_dict_layout_matches_manifest(fuser):
    manifest = refdata.read_json(f"{CASE}_manifest.json")
    ours = [[key, list(value.shape), str(value.dtype).removeprefix("torch.")]
            for key, value in sorted(fuser.state_dict().items())]
    assert ours == manifest


def test_parameter_count(fuser):
    assert sum(p.numel() for p in fuser.parameters()) == refdata.case_meta(CASE)["param_count"]


def test_tokens(fuser):
    """Every `out_tokens<suffix>` = fuser(`in_x<suffix>`)."""
    arrays = refdata.case_arrays(CASE)
    outputs = sorted(key for key in arrays if key.startswith("out_"))
    assert outputs, "no outputs in the archive"
    for key in outputs:
        assert key.startswith("out_tokens"), f"{key}: not produced by ConditionFuser"
        inputs = arrays["in_x" + key.removeprefix("out_tokens")]
        refdata.assert_close(fuser(torch.from_numpy(inputs)), arrays[key], what=f"{CASE}/{key}")

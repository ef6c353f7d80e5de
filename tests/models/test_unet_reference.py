"""The UNet reproduces the official openaimodel.UNetModel on the reference vectors (cases unet_*)."""

from __future__ import annotations

import pytest
import refdata
import torch

from uvidm_backend.models.unet import UNetConfig, UNetModel

pytestmark = pytest.mark.reference

EPS_PREFIX = "out_eps_"


@pytest.fixture(scope="module", params=["unet_tiny", pytest.param("unet_full", marks=pytest.mark.slow)])
def case(request):
    """(name, model with protocol weights loaded strictly, arrays) of one UNet case."""
    name = request.param
    config = UNetConfig(**refdata.read_json(f"{name}_config.json"))
    # Built on 'meta' and filled with assign=True: no default init of hundreds of millions of params.
    with torch.device("meta"):
        model = UNetModel(config)
    model.load_state_dict(refdata.case_weights(name), strict=True, assign=True)
    model.eval()
    return name, model, refdata.case_arrays(name)


def test_parameter_count(case):
    name, model, _ = case
    assert sum(p.numel() for p in model.parameters()) == refdata.case_meta(name)["param_count"]


def test_state_dict_matches_manifest(case):
    name, model, _ = case
    manifest = refdata.read_json(f"{name}_manifest.json")
    state = model.state_dict()
    assert sorted(state) == [key for key, _, _ in manifest]
    for key, shape, dtype in manifest:
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype) == f"torch.{dtype}", key


def test_eps(case):
    name, model, arrays = case
    suffixes = [key[len(EPS_PREFIX) :] for key in arrays if key.startswith(EPS_PREFIX)]
    assert suffixes, f"{name} has no {EPS_PREFIX}* outputs"
    x = torch.from_numpy(arrays["in_x"])
    context = torch.from_numpy(arrays["in_context"])
    with torch.no_grad():
        for suffix in suffixes:
            eps = model(x, torch.from_numpy(arrays[f"in_t_{suffix}"]), context)
            refdata.assert_close(eps, arrays[EPS_PREFIX + suffix], what=f"{name} {EPS_PREFIX}{suffix}")

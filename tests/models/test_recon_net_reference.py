"""ReconNet against the official `ReconNetWrapper` (reference case `recon_net`)."""

from __future__ import annotations

import pytest
import refdata
import torch

from uvidm_backend.models.recon_net import FaceCoefficients, ReconNet, ReconNetConfig

pytestmark = [pytest.mark.reference, pytest.mark.slow]

CASE = "recon_net"


@pytest.fixture(scope="module")
def net() -> ReconNet:
    meta = refdata.case_meta(CASE)
    model = ReconNet(ReconNetConfig(**meta["fc_dim_dict"]))
    model.load_state_dict(refdata.case_weights(CASE), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def outputs(net: ReconNet) -> dict[str, torch.Tensor]:
    x = torch.from_numpy(refdata.case_arrays(CASE)["in_x"])
    features = net.features(x)
    raw = net.coefficient_vector(features)
    coefficients = net(x)
    return {"backbone": features, "raw": raw, **coefficients.as_dict()}


def test_state_dict_matches_manifest(net: ReconNet):
    manifest = refdata.read_json(f"{CASE}_manifest.json")
    state = net.state_dict()
    assert sorted(state) == [name for name, _, _ in manifest]
    for name, shape, dtype in manifest:
        assert list(state[name].shape) == shape, name
        assert str(state[name].dtype) == f"torch.{dtype}", name
    meta = refdata.case_meta(CASE)
    assert len(state) == meta["n_state_dict_entries"]
    assert sum(p.numel() for p in net.parameters()) == meta["param_count"]


def test_every_output(outputs: dict[str, torch.Tensor]):
    expected = {k.removeprefix("out_"): v for k, v in refdata.case_arrays(CASE).items() if k.startswith("out_")}
    assert expected, "no out_* arrays in the case"
    assert set(expected) <= set(outputs), f"unknown outputs {set(expected) - set(outputs)}"
    for name, value in expected.items():
        refdata.assert_close(outputs[name], value, what=name)


def test_split_is_reversible(outputs: dict[str, torch.Tensor], net: ReconNet):
    coefficients = FaceCoefficients.from_vector(outputs["raw"], net.config)
    assert torch.equal(coefficients.to_vector(), outputs["raw"])

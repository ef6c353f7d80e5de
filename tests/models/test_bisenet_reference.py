"""BiSeNet against the official `seg_network.BiSeNet` (reference case `bisenet`)."""

from __future__ import annotations

import pytest
import refdata
import torch

from uvidm_backend.models.bisenet import BiSeNet, BiSeNetConfig

pytestmark = [pytest.mark.reference, pytest.mark.slow]

CASE = "bisenet"
# Argmax is only meaningful where the official top-1/top-2 logit gap is above float32 noise.
ARGMAX_MIN_GAP = 1e-4


@pytest.fixture(scope="module")
def net() -> BiSeNet:
    n_classes = refdata.case_meta(CASE)["arrays"]["out_logits"]["shape"][1]
    model = BiSeNet(BiSeNetConfig(n_classes=n_classes))
    model.load_state_dict(refdata.case_weights(CASE), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def arrays() -> dict:
    return refdata.case_arrays(CASE)


@pytest.fixture(scope="module")
def outputs(net: BiSeNet, arrays: dict) -> dict[str, torch.Tensor]:
    result = net(torch.from_numpy(arrays["in_x"]))
    return {**result._asdict(), "argmax": result.logits.argmax(dim=1)}


def test_state_dict_matches_manifest(net: BiSeNet):
    manifest = refdata.read_json(f"{CASE}_manifest.json")
    state = net.state_dict()
    assert sorted(state) == [name for name, _, _ in manifest]
    for name, shape, dtype in manifest:
        assert list(state[name].shape) == shape, name
        assert str(state[name].dtype) == f"torch.{dtype}", name
    meta = refdata.case_meta(CASE)
    assert len(state) == meta["n_state_dict_entries"]
    assert sum(p.numel() for p in net.parameters()) == meta["param_count"]


def test_logits(outputs: dict[str, torch.Tensor], arrays: dict):
    names = [k.removeprefix("out_") for k in arrays if k.startswith("out_") and arrays[k].dtype.kind == "f"]
    assert names, "no float out_* arrays in the case"
    for name in names:
        assert name in outputs, f"unknown output {name}"
        refdata.assert_close(outputs[name], arrays[f"out_{name}"], what=name)


def test_argmax_away_from_ties(outputs: dict[str, torch.Tensor], arrays: dict):
    names = [k.removeprefix("out_") for k in arrays if k.startswith("out_") and arrays[k].dtype.kind in "iu"]
    assert names, "no integer out_* arrays in the case"
    reference_logits = torch.from_numpy(arrays["out_logits"])
    top2 = reference_logits.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > ARGMAX_MIN_GAP
    assert decided.float().mean() > 0.99
    for name in names:
        expected = torch.from_numpy(arrays[f"out_{name}"])
        assert outputs[name].dtype == expected.dtype
        assert torch.equal(outputs[name][decided], expected[decided]), name

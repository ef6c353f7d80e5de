"""BiSeNet: sizes of the official face-parsing network and output shapes."""

from __future__ import annotations

import pytest
import torch

from uvidm_backend.models.bisenet import BiSeNet, BiSeNetConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net() -> BiSeNet:
    return BiSeNet().eval()


def test_size_and_keys(net: BiSeNet):
    assert sum(p.numel() for p in net.parameters()) == 13_300_416
    state = net.state_dict()
    assert len(state) == 191
    assert "cp.resnet.layer2.0.downsample.0.weight" in state
    assert not any(k.startswith("cp.resnet.fc") or k.startswith("sp.") for k in state)


@pytest.mark.parametrize("size", [(64, 64), (70, 100)])
def test_logits_have_input_size(net: BiSeNet, size: tuple[int, int]):
    out = net(torch.rand(2, 3, *size))
    assert len(out) == 3
    for logits in out:
        assert logits.shape == (2, 19, *size)
    logits, logits16, logits32 = out
    assert torch.equal(logits, out.logits)


def test_n_classes():
    out = BiSeNet(BiSeNetConfig(n_classes=5)).eval()(torch.rand(1, 3, 32, 32))
    assert out.logits.shape == (1, 5, 32, 32)

"""ReconNet / FaceCoefficients: layout, shapes and sizes of the official network."""

from __future__ import annotations

import pytest
import torch

from uvidm_backend.models.recon_net import FaceCoefficients, ReconNet, ReconNetConfig


def test_default_config_is_uvidm():
    config = ReconNetConfig()
    assert (config.id_dims, config.exp_dims, config.tex_dims) == (80, 64, 80)
    assert config.coefficient_dims == 257


def test_split_layout():
    """Deep3DFaceRecon order: id, exp, tex, angle, gamma (channel-major 3x9), trans."""
    vector = torch.arange(2 * 257, dtype=torch.float64).reshape(2, 257)
    c = FaceCoefficients.from_vector(vector)
    assert torch.equal(c.id, vector[:, 0:80])
    assert torch.equal(c.exp, vector[:, 80:144])
    assert torch.equal(c.tex, vector[:, 144:224])
    assert torch.equal(c.angle, vector[:, 224:227])
    assert c.gamma.shape == (2, 3, 9)
    assert torch.equal(c.gamma[:, 1, 0], vector[:, 227 + 9])
    assert torch.equal(c.trans, vector[:, 254:257])
    assert torch.equal(c.to_vector(), vector)
    assert list(c.as_dict()) == ["id", "exp", "tex", "angle", "gamma", "trans"]


def test_split_rejects_wrong_width():
    with pytest.raises(ValueError):
        FaceCoefficients.from_vector(torch.zeros(1, 256))


def test_split_custom_dims():
    config = ReconNetConfig(id_dims=3, exp_dims=2, tex_dims=4)
    c = FaceCoefficients.from_vector(torch.zeros(1, config.coefficient_dims), config)
    assert (c.id.shape[1], c.exp.shape[1], c.tex.shape[1], c.trans.shape[1]) == (3, 2, 4, 3)


@pytest.mark.slow
def test_full_network_size_and_shapes():
    net = ReconNet().eval()
    assert sum(p.numel() for p in net.parameters()) == 24_034_625
    assert len(net.state_dict()) == 332
    assert "backbone.fc.weight" not in net.state_dict()
    assert [layer.out_channels for layer in net.final_layers] == [80, 64, 80, 3, 27, 2, 1]
    x = torch.rand(2, 3, 224, 224)
    features = net.features(x)
    assert features.shape == (2, 2048, 1, 1)
    assert net.coefficient_vector(features).shape == (2, 257)
    c = net(x)
    shapes = {k: tuple(v.shape) for k, v in c.as_dict().items()}
    assert shapes == {"id": (2, 80), "exp": (2, 64), "tex": (2, 80), "angle": (2, 3), "gamma": (2, 3, 9),
                      "trans": (2, 3)}

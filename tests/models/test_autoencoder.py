"""AutoencoderKL: architecture, config handling and known-answer tests of its building blocks."""

from __future__ import annotations

import math

import pytest
import torch

from uvidm_backend.models.autoencoder import (
    AttnBlock,
    AutoencoderConfig,
    AutoencoderKL,
    DDConfig,
    DiagonalGaussian,
    Downsample,
    Upsample,
)

SMALL = AutoencoderConfig(embed_dim=3, ddconfig=DDConfig(z_channels=3, resolution=32, ch=32, ch_mult=(1, 2, 2),
                                                         num_res_blocks=1))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
def test_default_config_is_the_uvidm_first_stage():
    model = AutoencoderKL()
    assert _count(model) == 83_653_863
    assert model.downsampling_factor == 8


def test_encode_decode_shapes_for_another_size():
    torch.manual_seed(0)
    model = AutoencoderKL(SMALL).eval()
    x = torch.rand(2, 3, 40, 24) * 2 - 1
    posterior = model.encode(x)
    assert posterior.moments.shape == (2, 6, 10, 6)
    for value in (posterior.mean, posterior.logvar, posterior.std, posterior.mode(), posterior.sample()):
        assert value.shape == (2, 3, 10, 6)
    assert model.decode(posterior.mode()).shape == (2, 3, 40, 24)
    reconstruction, _ = model(x, sample_posterior=False)
    assert reconstruction.shape == x.shape


def test_batch_elements_are_independent_and_float64_works():
    torch.manual_seed(0)
    model = AutoencoderKL(SMALL).eval().double()
    z = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    both = model.decode(z)
    assert both.dtype == torch.float64
    torch.testing.assert_close(both[1:], model.decode(z[1:]))


def test_posterior_clamps_logvar():
    moments = torch.cat([torch.zeros(1, 2, 1, 1), torch.tensor([[-50.0, 40.0]]).view(1, 2, 1, 1)], dim=1)
    posterior = DiagonalGaussian.from_moments(moments)
    assert posterior.logvar.flatten().tolist() == [-30.0, 20.0]
    torch.testing.assert_close(posterior.std.flatten(), torch.tensor([math.exp(-15.0), math.exp(10.0)]))
    assert posterior.moments is moments


def test_config_from_yaml_params():
    params = {"embed_dim": 4, "monitor": "val/rec_loss", "ckpt_path": "x.ckpt",
              "lossconfig": {"target": "torch.nn.Identity"},
              "ddconfig": {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                           "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
                           "dropout": 0.0}}
    config = AutoencoderConfig.from_dict(params)
    assert config == AutoencoderConfig()
    assert AutoencoderConfig(embed_dim=4, ddconfig=params["ddconfig"]) == config
    assert AutoencoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError):
        AutoencoderConfig.from_dict({**params, "not_an_argument": 1})
    with pytest.raises(ValueError):
        AutoencoderConfig(ddconfig=DDConfig(double_z=False))


def test_attn_resolutions_add_attention_at_the_official_keys():
    dd = DDConfig(z_channels=3, resolution=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,))
    model = AutoencoderKL(AutoencoderConfig(embed_dim=3, ddconfig=dd)).eval()
    keys = {key.rsplit(".", 2)[0] for key in model.state_dict() if ".attn." in key}
    # 16 px is level 1 in both: one attention per encoder block, num_res_blocks+1 in the decoder
    assert keys == {"encoder.down.1.attn.0", "decoder.up.1.attn.0", "decoder.up.1.attn.1"}
    assert model.decode(torch.randn(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_attention_matches_the_official_formula():
    """SDPA vs the official bmm formulation (softmax(q^T k * C**-0.5), then v)."""
    torch.manual_seed(0)
    block = AttnBlock(64).double().eval()
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    h = block.norm(x)
    q, k, v = (conv(h).reshape(2, 64, 35) for conv in (block.q, block.k, block.v))
    weights = torch.softmax(torch.bmm(q.permute(0, 2, 1), k) * 64 ** -0.5, dim=2)
    expected = x + block.proj_out(torch.bmm(v, weights.permute(0, 2, 1)).reshape(2, 64, 5, 7))
    torch.testing.assert_close(block(x), expected)


def test_groupnorm_eps_is_1e_6_everywhere():
    model = AutoencoderKL(SMALL)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.eps == 1e-6 and m.num_groups == 32 for m in norms)


def test_downsample_pads_right_and_bottom_only():
    down = Downsample(1, with_conv=True)
    torch.nn.init.zeros_(down.conv.bias)
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    with torch.no_grad():
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 0, 0] = 1.0  # output (i, j) reads input (2i, 2j)
        torch.testing.assert_close(down(x), x[:, :, ::2, ::2])
        down.conv.weight.zero_()
        down.conv.weight[0, 0, 2, 2] = 1.0  # reads (2i+2, 2j+2): zero padding at the last row/column
        expected = torch.tensor([[11.0, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
        torch.testing.assert_close(down(x), expected)


def test_upsample_is_nearest_then_conv():
    up = Upsample(1, with_conv=True)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.weight[0, 0, 1, 1] = 1.0
        up.conv.bias.zero_()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    expected = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(up(x), expected)

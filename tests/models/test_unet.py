"""Shapes, configuration and known-answer checks of the latent-diffusion UNet."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from uvidm_backend.models.attention import CrossAttention, SpatialTransformer
from uvidm_backend.models.unet import UNetConfig, UNetModel, timestep_embedding

# Small, fast configuration with the UV-IDM layout: 5 levels (4 halvings), resblock up/down.
SMALL = UNetConfig(
    model_channels=32,
    channel_mult=(1, 1, 2, 2, 2),
    attention_resolutions=(2, 8),
    num_res_blocks=1,
    num_heads=4,
    context_dim=16,
)


def _small_model(config: UNetConfig = SMALL, seed: int = 0) -> UNetModel:
    torch.manual_seed(seed)
    return UNetModel(config).eval()


def test_default_config_is_the_official_unet():
    """UV-IDM's yaml unet_config: 380,681,668 parameters in 940 state-dict entries."""
    with torch.device("meta"):
        model = UNetModel(UNetConfig())
    assert sum(p.numel() for p in model.parameters()) == 380_681_668
    assert len(model.state_dict()) == 940
    transformers = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
    # ds = 1, 2, 4, 8 in both halves (2 input + 3 output blocks each) plus the middle block.
    assert len(transformers) == 4 * 5 + 1
    attn = transformers[0].transformer_blocks[0].attn1
    assert (attn.heads, attn.dim_head) == (8, 24)  # legacy layout: 8 heads of width ch / 8


def test_config_from_yaml_lists_is_frozen_and_hashable():
    config = UNetConfig(**{**dataclasses.asdict(UNetConfig()), "channel_mult": [1, 2], "attention_resolutions": [1]})
    assert config.channel_mult == (1, 2) and config.attention_resolutions == (1,)
    hash(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_heads = 4


def test_unsupported_config_is_rejected():
    with pytest.raises(ValueError):
        UNetConfig(use_spatial_transformer=False)
    with pytest.raises(ValueError):
        UNetConfig(context_dim=None)


def test_attention_heads_rule():
    assert UNetConfig(num_heads=8).attention_heads(384) == (8, 48)
    assert UNetConfig(num_heads=-1, num_head_channels=64).attention_heads(320) == (5, 64)


def test_batch_with_different_timesteps():
    """Each sample gets its own timestep and nothing leaks across the batch."""
    model = _small_model()
    x = torch.randn(1, 4, 16, 16).expand(3, -1, -1, -1)
    context = torch.randn(1, 5, 16).expand(3, -1, -1)
    t = torch.tensor([999, 500, 1])
    with torch.no_grad():
        eps = model(x, t, context)
        assert eps.shape == (3, 4, 16, 16) and eps.dtype == torch.float32
        # Compared in float64: batched and per-sample float32 runs differ by rounding (amplified by
        # the random default initialisation), which would hide nothing but makes tolerances fragile.
        model.double()
        x, context = x.double(), context.double()
        batched = model(x, t, context)
        single = torch.cat([model(x[i : i + 1], t[i : i + 1], context[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(batched[0], batched[1]) and not torch.allclose(batched[1], batched[2])


def test_scalar_timestep_broadcasts():
    model = _small_model()
    x, context = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.tensor(250), context), model(x, torch.tensor([250, 250]), context))


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (48, 16)])
def test_any_size_multiple_of_16(size):
    model = _small_model()
    with torch.no_grad():
        eps = model(torch.randn(1, 4, *size), torch.tensor([10]), torch.randn(1, 7, 16))
    assert eps.shape == (1, 4, *size)
    assert torch.isfinite(eps).all()


def test_resample_without_resblock_updown():
    """resblock_updown=False uses the conv Downsample ('op') / Upsample ('conv') of the official code."""
    config = dataclasses.replace(SMALL, resblock_updown=False, channel_mult=(1, 2), attention_resolutions=(1,))
    model = _small_model(config)
    keys = model.state_dict().keys()
    assert "input_blocks.2.0.op.weight" in keys and "output_blocks.1.1.conv.weight" in keys
    with torch.no_grad():
        assert model(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.randn(2, 3, 16)).shape == (2, 4, 8, 8)


def test_float64_model_agrees_with_float32():
    model = _small_model()
    x, t, context = torch.randn(1, 4, 16, 16), torch.tensor([321]), torch.randn(1, 4, 16)
    with torch.no_grad():
        eps32 = model(x, t, context)
        eps64 = model.double()(x.double(), t, context.double())
    assert eps64.dtype == torch.float64
    err = (eps32.double() - eps64).abs().max() / eps64.abs().max()
    assert err < 1e-5


def test_timestep_embedding_known_values():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos first, then sin
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / 4) for i in range(4)])
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    odd = timestep_embedding(torch.tensor([5]), 7)
    assert odd.shape == (1, 7) and odd[0, -1] == 0


def test_cross_attention_matches_explicit_softmax():
    """The fused attention equals the official einsum/softmax formulation (scale dim_head**-0.5)."""
    torch.manual_seed(0)
    attn = CrossAttention(32, context_dim=12, heads=4, dim_head=8).eval()
    x, context = torch.randn(2, 9, 32), torch.randn(2, 5, 12)
    with torch.no_grad():
        q, k, v = (
            t.view(2, -1, 4, 8).permute(0, 2, 1, 3) for t in (attn.to_q(x), attn.to_k(context), attn.to_v(context))
        )
        weights = (torch.einsum("bhid,bhjd->bhij", q, k) * 8**-0.5).softmax(dim=-1)
        expected = attn.to_out(torch.einsum("bhij,bhjd->bhid", weights, v).permute(0, 2, 1, 3).reshape(2, 9, 32))
        torch.testing.assert_close(attn(x, context), expected, rtol=1e-5, atol=1e-6)

"""A tiny UV-IDM configuration: the released architecture at a size that runs in milliseconds."""

from __future__ import annotations

from uvidm_backend.models.autoencoder import AutoencoderConfig, DDConfig
from uvidm_backend.models.stack import LatentDiffusionConfig
from uvidm_backend.models.unet import UNetConfig


def tiny_ldm_config(texture_size: int = 64) -> LatentDiffusionConfig:
    """Two UNet levels with attention, a two-level autoencoder (latent = texture / 2)."""
    unet = UNetConfig(image_size=texture_size // 2, model_channels=32, attention_resolutions=(1, 2),
                      num_res_blocks=1, channel_mult=(1, 2), num_heads=4)
    autoencoder = AutoencoderConfig(embed_dim=4, ddconfig=DDConfig(resolution=texture_size, ch=32, ch_mult=(1, 2),
                                                                   num_res_blocks=1))
    return LatentDiffusionConfig(unet=unet, autoencoder=autoencoder, image_size=texture_size // 2)

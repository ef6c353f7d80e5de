"""The first stage of UV-IDM: the KL-regularised convolutional autoencoder.

Re-implements `ldm.models.autoencoder.AutoencoderKL` with the `Encoder` / `Decoder` of
`ldm.modules.diffusionmodules.model` and `DiagonalGaussianDistribution` of
`ldm.modules.distributions.distributions`, for inference only (no loss module, no training
step). Module names follow the official ones, so `first_stage_model.*` of `ldm.ckpt` (prefix
stripped) loads with `strict=True`.

Details that matter for matching the official numbers: every GroupNorm here has eps 1e-6 (the
UNet uses 1e-5), `Downsample` pads right/bottom only before a stride-2 valid conv, `Upsample` is
nearest 2x then a 3x3 conv, and the mid-block attention is single-head with scale C**-0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# AutoencoderKL constructor arguments that only matter for training or checkpoint bootstrapping.
_TRAINING_ONLY_KEYS = ("lossconfig", "monitor", "ckpt_path", "ignore_keys", "image_key", "colorize_nlabels")


@dataclass(frozen=True)
class DDConfig:
    """`ddconfig` of the yaml's `first_stage_config` (shared by `Encoder` and `Decoder`).

    Defaults are those of `configs/latent-diffusion/uvffhq-ldm-kl-4.yaml` (a 4-channel latent
    at 1/8 resolution); the remaining fields carry the official keyword defaults.
    """

    double_z: bool = True
    z_channels: int = 4
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    resamp_with_conv: bool = True
    give_pre_end: bool = False
    tanh_out: bool = False
    attn_type: str = "vanilla"

    def __post_init__(self) -> None:
        # yaml/json give lists; tuples keep the config immutable and hashable.
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if self.attn_type not in ("vanilla", "none"):
            raise ValueError(f"attn_type {self.attn_type!r} is not supported (only 'vanilla' and 'none')")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Arguments of `AutoencoderKL` that shape the network (yaml names, UV-IDM defaults).

    `AutoencoderConfig(**d)` works for a dict holding only `embed_dim` and `ddconfig`;
    `from_dict` also accepts the full yaml `params` (loss, monitor, ckpt_path are dropped).
    """

    embed_dim: int = 4
    ddconfig: DDConfig = field(default_factory=DDConfig)

    def __post_init__(self) -> None:
        if isinstance(self.ddconfig, Mapping):
            object.__setattr__(self, "ddconfig", DDConfig(**self.ddconfig))
        if not self.ddconfig.double_z:
            raise ValueError("AutoencoderKL needs ddconfig.double_z=True (mean and log-variance)")

    @classmethod
    def from_dict(cls, params: Mapping[str, Any]) -> AutoencoderConfig:
        """Builds the config from the yaml's `first_stage_config.params` (or a json dump of it)."""
        params = dict(params)
        dropped = [key for key in _TRAINING_ONLY_KEYS if params.pop(key, None) is not None]
        if dropped:
            logger.debug("AutoencoderConfig: ignoring training-only arguments %s", dropped)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TypeError(f"unknown AutoencoderKL arguments: {unknown}")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ddconfig"]["ch_mult"] = list(self.ddconfig.ch_mult)
        out["ddconfig"]["attn_resolutions"] = list(self.ddconfig.attn_resolutions)
        return out


@dataclass(frozen=True)
class DiagonalGaussian:
    """The posterior q(z|x) returned by `encode` (official `DiagonalGaussianDistribution`).

    `moments` are the raw `quant_conv` outputs; `logvar` is clamped to [-30, 20] as officially.
    """

    moments: Tensor
    mean: Tensor
    logvar: Tensor
    std: Tensor

    @classmethod
    def from_moments(cls, moments: Tensor) -> DiagonalGaussian:
        mean, logvar = torch.chunk(moments, 2, dim=1)
        logvar = torch.clamp(logvar, -30.0, 20.0)
        return cls(moments=moments, mean=mean, logvar=logvar, std=torch.exp(0.5 * logvar))

    @property
    def var(self) -> Tensor:
        return torch.exp(self.logvar)

    def mode(self) -> Tensor:
        """The deterministic latent UV-IDM uses (`posterior.mode()`): the mean."""
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise


def _normalize(channels: int) -> nn.GroupNorm:
    """Official `Normalize`: 32 groups, eps 1e-6 (not PyTorch's 1e-5)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Official `ResnetBlock` with `temb_channels=0` (the autoencoder has no time embedding)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0,
                 conv_shortcut: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.use_conv_shortcut = conv_shortcut
        self.norm1 = _normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            if conv_shortcut:
                self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            else:
                self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x) if self.use_conv_shortcut else self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Official `AttnBlock`: single-head self-attention over all pixels, 1x1-conv projections."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.norm = _normalize(in_channels)
        self.q = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.k = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.v = nn.Conv2d(in_channels, in_channels, kernel_size=1)
        self.proj_out = nn.Conv2d(in_channels, in_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape

        def tokens(t: Tensor) -> Tensor:  # (b, c, h, w) -> (b, 1 head, h*w, c)
            return t.reshape(b, 1, c, height * width).transpose(-1, -2)

        # SDPA's default scale is c**-0.5, the official one; it avoids materialising the
        # (hw x hw) matrix where a fused kernel is available.
        out = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)), tokens(self.v(h)))
        out = out.transpose(-1, -2).reshape(b, c, height, width)
        return x + self.proj_out(out)


def _make_attn(channels: int, attn_type: str) -> nn.Module:
    return AttnBlock(channels) if attn_type == "vanilla" else nn.Identity()


class Downsample(nn.Module):
    """Official `Downsample`: pad (0,1,0,1) then a stride-2 3x3 conv without padding."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class Upsample(nn.Module):
    """Official `Upsample`: nearest 2x, then a 3x3 conv."""

    def __init__(self, in_channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class _Level(nn.Module):
    """One resolution of the encoder (`down[i]`) or decoder (`up[i]`): blocks, attentions, resampler."""

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def forward(self, h: Tensor) -> Tensor:
        for index, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[index](h)
        return h


class _Mid(nn.Module):
    """`mid`: ResnetBlock, attention, ResnetBlock at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, attn_type: str):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = _make_attn(channels, attn_type)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Official `ldm.modules.diffusionmodules.model.Encoder` (image -> 2*z_channels moments map)."""

    def __init__(self, config: DDConfig):
        super().__init__()
        c = config
        self.num_resolutions = len(c.ch_mult)
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, kernel_size=3, stride=1, padding=1)
        in_ch_mult = (1, *c.ch_mult)
        curr_res = c.resolution
        self.down = nn.ModuleList()
        block_in = c.ch
        for level in range(self.num_resolutions):
            block_in = c.ch * in_ch_mult[level]
            block_out = c.ch * c.ch_mult[level]
            blocks, attns = [], []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, c.dropout))
                block_in = block_out
                if curr_res in c.attn_resolutions:
                    attns.append(_make_attn(block_in, c.attn_type))
            down = _Level(blocks, attns)
            if level != self.num_resolutions - 1:
                down.downsample = Downsample(block_in, c.resamp_with_conv)
                curr_res //= 2
            self.down.append(down)
        self.mid = _Mid(block_in, c.dropout, c.attn_type)
        self.norm_out = _normalize(block_in)
        out_channels = 2 * c.z_channels if c.double_z else c.z_channels
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level, down in enumerate(self.down):
            h = down(h)
            if level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Official `ldm.modules.diffusionmodules.model.Decoder` (latent -> image)."""

    def __init__(self, config: DDConfig):
        super().__init__()
        c = config
        self.num_resolutions = len(c.ch_mult)
        self.give_pre_end = c.give_pre_end
        self.tanh_out = c.tanh_out
        block_in = c.ch * c.ch_mult[-1]
        curr_res = c.resolution // 2 ** (self.num_resolutions - 1)
        logger.debug("Decoder: z of shape (%d, %d, %d)", c.z_channels, curr_res, curr_res)
        self.conv_in = nn.Conv2d(c.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _Mid(block_in, c.dropout, c.attn_type)
        levels: list[_Level] = []
        for level in reversed(range(self.num_resolutions)):
            block_out = c.ch * c.ch_mult[level]
            blocks, attns = [], []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, c.dropout))
                block_in = block_out
                if curr_res in c.attn_resolutions:
                    attns.append(_make_attn(block_in, c.attn_type))
            up = _Level(blocks, attns)
            if level != 0:
                up.upsample = Upsample(block_in, c.resamp_with_conv)
                curr_res *= 2
            levels.insert(0, up)  # `up[i]` is the level of ch_mult[i], as in the checkpoints
        self.up = nn.ModuleList(levels)
        self.norm_out = _normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            h = up(h)
            if level != 0:
                h = up.upsample(h)
        if self.give_pre_end:
            return h
        h = self.conv_out(F.silu(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h


class AutoencoderKL(nn.Module):
    """Official `ldm.models.autoencoder.AutoencoderKL` without its loss (inference only).

    Images are (B, in_channels, H, W) in [-1, 1]; latents are (B, embed_dim, H/f, W/f) with
    f = 2**(len(ch_mult)-1). UV-IDM's diffusion model scales latents by its `scale_factor`
    outside this module (`LatentDiffusion.decode_first_stage`).
    """

    def __init__(self, config: AutoencoderConfig | None = None):
        super().__init__()
        self.config = config or AutoencoderConfig()
        dd = self.config.ddconfig
        self.encoder = Encoder(dd)
        self.decoder = Decoder(dd)
        self.quant_conv = nn.Conv2d(2 * dd.z_channels, 2 * self.config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(self.config.embed_dim, dd.z_channels, kernel_size=1)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.config.ddconfig.ch_mult) - 1)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """Image -> posterior; `encode(x).mode()` is the deterministic latent."""
        return DiagonalGaussian.from_moments(self.quant_conv(self.encoder(x)))

    def decode(self, z: Tensor) -> Tensor:
        """Latent -> image (post_quant_conv, then the decoder)."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[Tensor, DiagonalGaussian]:
        """Reconstruction as the official `forward`: (decoded image, posterior)."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

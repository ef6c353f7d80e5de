"""Latent-diffusion UNet with spatial transformers (official ``ldm/modules/diffusionmodules/openaimodel.py``).

``UNetModel(UNetConfig())`` is the noise predictor of UV-IDM (``model.diffusion_model`` in
``ldm.ckpt``, 380,681,668 parameters); its state_dict keys equal the official ones, so the
checkpoint's ``model.diffusion_model.*`` entries load with ``strict=True`` once the prefix is
stripped. Only the 2-D, spatial-transformer, no-class-label variant UV-IDM uses is implemented.
Weights are always loaded from a checkpoint, so modules keep PyTorch's default initialisation
(the official zero-initialisation of output convs is a training detail).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SpatialTransformer


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Constructor arguments of the official ``UNetModel`` in yaml names; defaults = UV-IDM's yaml.

    ``attention_resolutions`` are downsampling factors (1 = full latent resolution), not pixel sizes.
    """

    image_size: int = 32
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 192
    attention_resolutions: Sequence[int] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    channel_mult: Sequence[int] = (1, 2, 2, 4, 4)
    num_heads: int = 8
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_spatial_transformer: bool = True
    context_dim: int | None = 128
    dropout: float = 0.0
    transformer_depth: int = 1
    legacy: bool = True
    num_head_channels: int = -1
    conv_resample: bool = True

    def __post_init__(self) -> None:
        # yaml/json give lists; keep the frozen config hashable and immutable.
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        if not self.use_spatial_transformer or self.context_dim is None:
            raise ValueError("only the spatial-transformer UNet with a context_dim (as in UV-IDM) is implemented")
        if self.num_heads == -1 and self.num_head_channels == -1:
            raise ValueError("either num_heads or num_head_channels has to be set")

    def attention_heads(self, ch: int) -> tuple[int, int]:
        """(heads, head width) of the transformer at a level with ``ch`` channels (official rule)."""
        if self.num_head_channels == -1:
            heads, dim_head = self.num_heads, ch // self.num_heads
        else:
            heads, dim_head = ch // self.num_head_channels, self.num_head_channels
        if self.legacy:
            dim_head = ch // heads
        return heads, dim_head


def batch_timesteps(timesteps: Tensor | int, x: Tensor) -> Tensor:
    """``timesteps`` as a (B,) tensor on x's device: a scalar stands for every sample of x's batch."""
    timesteps = torch.as_tensor(timesteps, device=x.device)
    return timesteps.expand(x.shape[0]) if timesteps.ndim == 0 else timesteps


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[cos, sin]`` (cos first) of official ``util.timestep_embedding``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class GroupNorm32(nn.GroupNorm):
    """Official ``GroupNorm32`` (32 groups, eps 1e-5): half-precision inputs are normalised in float32."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            weight, bias = self.weight.float(), self.bias.float()
            return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
        return super().forward(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling, optionally followed by a 3x3 conv (official ``Upsample``, key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """Stride-2 3x3 conv, or 2x2 average pooling (official ``Downsample``, key ``op``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Official ``ResBlock`` with timestep conditioning (scale-shift or additive).

    With ``up``/``down`` (``resblock_updown``) the resampling is applied to both the normed+SiLU'd
    residual branch (before ``in_layers``' conv) and the skip input.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.forward_projected(x, self.emb_layers(emb))

    def forward_projected(self, x: Tensor, emb_out: Tensor) -> Tensor:
        """``forward`` given ``emb_layers(emb)`` (B, 2C or C), which depends on the timestep alone."""
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = emb_out.type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


#: How `UNetModel.run_blocks` runs one ResBlock or SpatialTransformer: (layer, h) -> h.
LayerCall = Callable[[nn.Module, Tensor], Tensor]


class TimestepEmbedSequential(nn.Sequential):
    """Official ``TimestepEmbedSequential``: hands ``emb`` to ResBlocks and ``context`` to transformers."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None = None) -> Tensor:
        return self.run(x, lambda block, h: block(h, emb), lambda layer, h: layer(h, context))

    def run(self, x: Tensor, resblock: LayerCall, transformer: LayerCall) -> Tensor:
        """The layers in order, ResBlocks through ``resblock``, transformers through ``transformer``."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = resblock(layer, x)
            elif isinstance(layer, SpatialTransformer):
                x = transformer(layer, x)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """Official ``openaimodel.UNetModel`` (spatial-transformer variant): predicts the noise eps.

    Spatial sizes must be divisible by ``2 ** (len(channel_mult) - 1)`` (16 for UV-IDM).
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        mc = cfg.model_channels
        time_embed_dim = mc * 4
        self.time_embed = nn.Sequential(
            nn.Linear(mc, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )

        def res_block(ch: int, out_ch: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch, time_embed_dim, cfg.dropout, out_ch, cfg.use_scale_shift_norm, up=up, down=down)

        def transformer(ch: int) -> SpatialTransformer:
            heads, dim_head = cfg.attention_heads(ch)
            return SpatialTransformer(
                ch, heads, dim_head, depth=cfg.transformer_depth, dropout=cfg.dropout, context_dim=cfg.context_dim
            )

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        input_block_chans = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res_block(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample)
                self.input_blocks.append(TimestepEmbedSequential(down))
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res_block(ch, ch), transformer(ch), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res_block(ch + input_block_chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor | None = None) -> Tensor:
        """x: (B, in_channels, H, W) latents; timesteps: (B,) (or a scalar); context: (B, M, context_dim).

        Returns eps (B, out_channels, H, W) in x's dtype; the network runs in its parameters' dtype.
        """
        emb = self.time_embedding(timesteps, x)
        if context is not None:
            context = context.to(emb.dtype)
        return self.run_blocks(x, lambda block, h: block(h, emb), lambda layer, h: layer(h, context))

    def time_embedding(self, timesteps: Tensor, x: Tensor) -> Tensor:
        """``time_embed`` of the sinusoidal features of ``timesteps`` ((B,) or a scalar for all of x's
        batch), in the network's dtype."""
        timesteps = batch_timesteps(timesteps, x)
        dtype = self.time_embed[0].weight.dtype
        return self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))

    def run_blocks(self, x: Tensor, resblock: LayerCall, transformer: LayerCall) -> Tensor:
        """The network's skeleton (input blocks, middle, output blocks with their skip connections,
        ``out``) in its parameters' dtype, returning x's dtype; ResBlocks and transformers run through
        the given calls, which bring the time embedding and the context."""
        h = x.to(self.time_embed[0].weight.dtype)
        hs = []
        for module in self.input_blocks:
            h = module.run(h, resblock, transformer)
            hs.append(h)
        h = self.middle_block.run(h, resblock, transformer)
        for module in self.output_blocks:
            h = module.run(torch.cat([h, hs.pop()], dim=1), resblock, transformer)
        return self.out(h).to(x.dtype)

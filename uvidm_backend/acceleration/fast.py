"""The fast inference path: the diffusion UNet and the decoder in bf16/fp16, replayed from CUDA graphs.

At batch 1 the float32 eager UNet is launch-bound (about a thousand small kernels per step); the fast
path removes the launch gaps (one CUDA graph per input shape: static input buffers, `replay`), halves
the bytes (bf16 weights, channels-last activations) and, optionally, fuses the elementwise work with
`torch.compile` (default mode: Inductor fuses the GroupNorm + SiLU, scale-shift, GEGLU and residual adds;
its own CUDA graphs are left off, ours capture the compiled function). It computes the same function as
the float32 path: normalisations keep float32 statistics (`GroupNorm32` upcasts half inputs as the
official code does; LayerNorm/GroupNorm kernels accumulate in float32), attention runs through SDPA
(float32 softmax), the sinusoidal timestep features are computed in float32 and the sampler arithmetic stays float32
(the wrappers take and return the caller's dtype).

Usage (the sampler functions take any `EpsModel`)::

    unet = compile_unet(networks.unet, torch.bfloat16, batch=1, latent_size=32, context_len=1024)
    decode = FastDecoder(networks)
    latent = sample_ddim(unet, x_T, tokens, ddim, generator=generator)
    image = decode(latent)

No official counterpart: the official inference runs the float32 modules eagerly.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from uvidm_backend.acceleration.gemm_convs import convs_as_gemms
from uvidm_backend.acceleration.graphs import CudaGraphed
from uvidm_backend.acceleration.group_norms import native_group_norms
from uvidm_backend.acceleration.hoisted_unet import HoistedUNet
from uvidm_backend.diffusion.schedule import NUM_TIMESTEPS
from uvidm_backend.models.unet import batch_timesteps

#: Output pixels up to which the uncompiled fast UNet runs 1 x 1 convolutions as GEMMs: at batch 1 all of them.
POINTWISE_GEMM_PIXELS = 1024

#: `torch.compile` modes that capture their own CUDA graphs (ours are then left off).
_SELF_GRAPHING_MODES = ("reduce-overhead", "max-autotune")

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16 (likewise fp16, fp32)."""
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(DTYPES)})") from None


def cast_module(module: nn.Module, dtype: torch.dtype, channels_last: bool = False) -> nn.Module:
    """A frozen eval-mode copy of `module` in `dtype` (the original is left untouched)."""
    fast = copy.deepcopy(module).to(dtype=dtype).eval().requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def _compiled(module: nn.Module, compile_mode: str | None, freeze: bool = False,
              inductor_options: Mapping[str, object] | None = None) -> Callable[..., Tensor]:
    if not compile_mode:
        return module
    # dynamic=False: one specialised compilation per batch size, no symbolic shapes in the kernels.
    mode = None if compile_mode == "default" else compile_mode
    compiled = torch.compile(module, mode=mode, dynamic=False)
    # Inductor's freezing treats the weights as constants (folds their casts and layout changes).
    options = {**(inductor_options or {}), **({"freezing": True} if freeze else {})}
    if not options:
        return compiled
    inductor_config = importlib.import_module("torch._inductor.config")  # loaded lazily by torch.compile

    def with_options(*args: Tensor) -> Tensor:
        # Options apply when a shape is compiled, i.e. on the first call with that shape.
        with inductor_config.patch(options):
            return compiled(*args)

    return with_options


class FastUNet:
    """An `EpsModel` for `sample_ddim` / `sample_dpmpp_2m`: a reduced-precision copy of the UNet.

    `dtype` is the weights' and activations' dtype (bf16 by default; float32 gives the plain network
    through the same machinery). `compile_mode`: None (eager), 'default' (Inductor, our CUDA graphs),
    'max-autotune-no-cudagraphs' or a self-graphing mode ('reduce-overhead'; ours are then off);
    `freeze` turns on Inductor's weight freezing for the compilation; `inductor_options` are further
    `torch._inductor.config` settings for it (e.g. {"conv_1x1_as_mm": True}).
    `cuda_graph` captures one graph per (batch, latent size, context length) on first use.
    `hoist` runs the UNet as a `HoistedUNet`: the context's cross-attention keys and values are computed
    once per context tensor (by identity: samplers pass one tensor for a whole generation; it must not be
    modified in place between steps), the time projections and self-attention projections in one GEMM each.
    `gemm_conv_pixels`: convolutions with at most this many output pixels (batch included) run as one GEMM
    (`GemmConv2d`; at batch 1 the 8 x 8 and smaller levels); 0 keeps every convolution on cuDNN;
    `gemm_pointwise_pixels` is that limit for the 1 x 1 convolutions (default: `POINTWISE_GEMM_PIXELS` without
    torch.compile, the same as `gemm_conv_pixels` with it).
    `flash_small_attention` (hoisted only) keeps the small attentions off cuDNN (see `HoistedUNet`);
    `timestep_table` (hoisted only; 0 for none) is the number of trained timesteps whose time projections are
    tabulated once instead of computed at every step (default: the official schedule's 1000; later ones are
    clamped to the last row, so pass the model's own count where it differs).
    `native_group_norm` runs the ResBlocks' GroupNorm32 in the weights' dtype (`native_group_norms`: the
    same function in one kernel instead of five). Default: on without torch.compile (the graphed bf16 step
    on an H200 went 5.34 -> 4.72 ms, same accuracy), off with it (Inductor fuses those casts; not measured).
    Inputs and output keep the caller's dtype (float32 latents stay float32 between steps).
    """

    def __init__(self, unet: nn.Module, dtype: torch.dtype | str = torch.bfloat16, compile_mode: str | None = None,
                 cuda_graph: bool = True, channels_last: bool = True, freeze: bool = False, hoist: bool = True,
                 inductor_options: Mapping[str, object] | None = None, gemm_conv_pixels: int = 64,
                 flash_small_attention: bool = True, timestep_table: int = NUM_TIMESTEPS,
                 gemm_pointwise_pixels: int | None = None, native_group_norm: bool | None = None):
        self.dtype = parse_dtype(dtype)
        self.compile_mode = compile_mode
        self.config = getattr(unet, "config", None)
        self.unet = cast_module(unet, self.dtype, channels_last)
        if gemm_pointwise_pixels is None:
            # Measured on an H200 at batch 1: every 1 x 1 convolution (up to the 32 x 32 level) as a GEMM took
            # 51 µs off the graphed step, but added 45 µs to the compiled one (docs/PERFORMANCE.md).
            gemm_pointwise_pixels = gemm_conv_pixels if compile_mode else POINTWISE_GEMM_PIXELS
        if gemm_conv_pixels > 0:
            convs_as_gemms(self.unet, gemm_conv_pixels, gemm_pointwise_pixels)
        if native_group_norm if native_group_norm is not None else not compile_mode:
            native_group_norms(self.unet)
        self.hoisted = HoistedUNet(self.unet, flash_small_attention, timestep_table) if hoist else None
        self._forward = _compiled(self.hoisted or self.unet, compile_mode, freeze, inductor_options)
        self_graphing = compile_mode in _SELF_GRAPHING_MODES
        constant = (2,) if hoist else ()
        self._graphed = CudaGraphed(self._forward, constant_inputs=constant) if cuda_graph and not self_graphing \
            else None
        self._context: Tensor | None = None
        self._context_kv: Tensor | None = None

    def __call__(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        t, context = batch_timesteps(t, x), self._conditioning(context)
        if self._graphed is not None and x.is_cuda:
            return self._graphed(x, t.to(torch.long), context)
        return self._forward(x, t, context)

    def without_graph(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """The same (compiled) function, launched kernel by kernel instead of replayed: for profiling."""
        return self._forward(x, batch_timesteps(t, x), self._conditioning(context))

    def _conditioning(self, context: Tensor) -> Tensor:
        """What the network takes for `context`: the context itself, or its keys and values when hoisted."""
        if self.hoisted is None:
            return context
        if context is not self._context:
            with torch.no_grad():
                self._context_kv = self.hoisted.context_kv(context)
            self._context = context
        return self._context_kv


class _DecodeLatent(nn.Module):
    """`LatentDiffusionNetworks.decode_latent` on its own: 1/scale_factor * z (float32), then the decoder."""

    def __init__(self, networks: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.post_quant_conv = networks.autoencoder.post_quant_conv
        self.decoder = networks.autoencoder.decoder
        self.register_buffer("scale_factor", networks.scale_factor.detach().clone())
        self.dtype = dtype

    def forward(self, latent: Tensor) -> Tensor:
        z = (1.0 / self.scale_factor.float()) * latent.float()
        return self.decoder(self.post_quant_conv(z.to(self.dtype))).float()


class FastDecoder:
    """`networks.decode_latent` in reduced precision (bf16 by default) from CUDA graphs; returns float32.

    Channels-last is off by default: on an H100 it made the 256 x 256 decoder slower (bf16, batch 32:
    120 ms against 85 ms).
    """

    def __init__(self, networks: nn.Module, dtype: torch.dtype | str = torch.bfloat16, compile_mode: str | None = None,
                 cuda_graph: bool = True, channels_last: bool = False):
        self.dtype = parse_dtype(dtype)
        module = _DecodeLatent(networks, self.dtype)
        module = cast_module(module, self.dtype, channels_last)
        module.scale_factor = networks.scale_factor.detach().clone().to(module.scale_factor.device)
        self.module = module
        self._forward = _compiled(module, compile_mode)
        self_graphing = compile_mode in _SELF_GRAPHING_MODES
        self._graphed = CudaGraphed(self._forward) if cuda_graph and not self_graphing else None

    def __call__(self, latent: Tensor) -> Tensor:
        if self._graphed is not None and latent.is_cuda:
            return self._graphed(latent)
        return self._forward(latent)


def example_unet_inputs(config, device: torch.device, batch: int, latent_size: int | None = None,
                        context_len: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(x, t, context) of the shapes a generation passes the UNet: what it is compiled and captured with.

    `latent_size` defaults to the config's `image_size`; `context_len` to 1024 (the condition fuser's
    32 x 32 tokens of a 256 x 256 partial texture).
    """
    size = latent_size or config.image_size
    x = torch.randn(batch, config.in_channels, size, size, device=device)
    t = torch.full((batch,), 500, dtype=torch.long, device=device)
    context = torch.randn(batch, context_len or 1024, config.context_dim, device=device)
    return x, t, context


def compile_unet(unet: nn.Module, dtype: torch.dtype | str = torch.bfloat16, batch: int | None = None,
                 latent_size: int | None = None, context_len: int | None = None, **options) -> FastUNet:
    """A `FastUNet`, warmed up (compiled and captured) for one shape when `batch` is given
    (`example_unet_inputs`). Warming up here keeps compilation and capture out of the first generation.
    `options` are `FastUNet`'s.
    """
    fast = FastUNet(unet, dtype, **options)
    if batch is not None:
        fast(*example_unet_inputs(fast.config, next(unet.parameters()).device, batch, latent_size, context_len))
    return fast

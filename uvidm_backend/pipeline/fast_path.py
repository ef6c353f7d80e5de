"""How the networks run: the one place where the fast path ("off", "graph", "compile") is chosen, at load.

"off": the float32 modules, eagerly (the reference numbers). "graph" (CUDA): the bf16 UNet and the decoder
replayed from CUDA graphs, the float32 condition fuser too (relative error of the texture ~3e-3, see
docs/PERFORMANCE.md). "compile": also torch.compile's Inductor fusion, and each sampler update one kernel.
The graphs are captured once per batch size, on first use (`CudaGraphed` keys them by input shape); batch 1
at load, so that a first request captures nothing. Compiled functions are specialised per batch size too
(minutes each), so compile mode pads a batch to the next power of two (`batch_to_run`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from uvidm_backend.acceleration import EAGER_UPDATES, CudaGraphed, FastDecoder, compile_unet, warmed_fused_updates
from uvidm_backend.acceleration.compile_cache import use_persistent_compile_cache
from uvidm_backend.acceleration.fast import example_unet_inputs
from uvidm_backend.diffusion.ddim import EpsModel, SamplerUpdate

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class FastPath:
    """The callables each stage runs its network through."""

    mode: str  # "off", "graph" or "compile"
    eps_model: EpsModel  # the UNet, for the samplers
    decode: Callable[[Tensor], Tensor]  # latent -> texture in [-1, 1]
    fuse_tokens: Callable[[Tensor], Tensor] | None  # the condition fuser's replay (None: the module itself)
    sampler_updates: Mapping[str, SamplerUpdate]

    def precision(self) -> dict[str, str]:
        """The arithmetic of each network (result.json's `precision`)."""
        unet = {"off": "float32", "graph": "bf16 graph", "compile": "bf16 compiled"}[self.mode]
        graphed = "float32" if self.mode == "off" else "float32 graph"
        return {"unet": unet, "decoder": graphed, "condition_fuser": graphed, "recon_net": "float32",
                "face_parsing": "float32",
                "sampler_update": "float32 compiled" if self.sampler_updates is not EAGER_UPDATES else "float32"}

    def batch_to_run(self, size: int) -> int:
        """The batch size the UNet and decoder run at for `size` photos (padded in compile mode)."""
        if self.mode != "compile":
            return size
        return 1 << max(0, size - 1).bit_length()


def fast_unet(networks, compiled: bool, freeze: bool, warm: bool):
    """The bf16 fast UNet, compiled or not; `warm`: compiled and captured now at batch 1."""
    if compiled:
        log.info("torch.compile caches in %s", use_persistent_compile_cache())
    config = networks.config
    return compile_unet(networks.unet, torch.bfloat16, batch=1 if warm else None, latent_size=config.image_size,
                        context_len=config.context_tokens, compile_mode="default" if compiled else None,
                        freeze=freeze and compiled, timestep_table=config.timesteps)


def fused_updates(networks, device: torch.device) -> dict[str, SamplerUpdate]:
    size = networks.config.image_size
    return warmed_fused_updates((1, networks.config.channels, size, size), device)


def choose_fast_path(networks, mode: str, device: torch.device, freeze: bool = True) -> FastPath:
    """The `FastPath` of `mode` on `device` ("off" off CUDA whatever was asked), built and captured now."""
    mode = mode if device.type == "cuda" else "off"
    if mode == "off":
        return FastPath(mode, networks.unet, networks.decode_latent, None, EAGER_UPDATES)
    # Inductor is loaded anyway in compile mode: each sampler update becomes one kernel (graph mode stays free
    # of torch.compile, whose first use costs seconds of start-up and a working Triton).
    path = FastPath(mode, fast_unet(networks, mode == "compile", freeze, warm=True),
                    FastDecoder(networks, torch.float32), CudaGraphed(networks.condition_fuser),
                    fused_updates(networks, device) if mode == "compile" else EAGER_UPDATES)
    capture_graphs(path, networks, device, batch=1)
    return path


@torch.inference_mode()
def capture_graphs(path: FastPath, networks, device: torch.device, batch: int) -> None:
    """Captures the fuser's and the decoder's CUDA graphs at `batch` now (the UNet's is captured by
    `fast_unet`): no capture later that could collide with a background compilation."""
    size = networks.config.texture_size
    path.fuse_tokens(torch.zeros(batch, 3, size, size, device=device))
    latent_size = networks.config.image_size
    path.decode(torch.zeros(batch, networks.config.channels, latent_size, latent_size, device=device))
    torch.cuda.synchronize(device)


def compiled_fast_path(graph_path: FastPath, networks, device: torch.device, freeze: bool
                       ) -> tuple[FastPath, tuple]:
    """The compile-mode path made beside a running graph-mode one (`Pipeline.compile_in_background`): the
    UNet compiled (not yet captured) and the fused updates; returns it and the inputs to capture it with."""
    unet = fast_unet(networks, compiled=True, freeze=freeze, warm=False)
    inputs = example_unet_inputs(unet.config, device, 1, networks.config.image_size, networks.config.context_tokens)
    unet.without_graph(*inputs)
    return dataclasses.replace(graph_path, mode="compile", eps_model=unet,
                               sampler_updates=fused_updates(networks, device)), inputs

"""The fast inference path: reduced precision, per-generation constants hoisted, CUDA graphs, torch.compile."""

from uvidm_backend.acceleration.fast import FastDecoder, FastUNet, cast_module, compile_unet, parse_dtype
from uvidm_backend.acceleration.fused_update import EAGER_UPDATES, fused_update, warmed_fused_updates
from uvidm_backend.acceleration.graphs import CudaGraphed
from uvidm_backend.acceleration.hoisted_unet import HoistedUNet

__all__ = ["EAGER_UPDATES", "CudaGraphed", "FastDecoder", "FastUNet", "HoistedUNet", "cast_module", "compile_unet",
           "fused_update", "parse_dtype", "warmed_fused_updates"]

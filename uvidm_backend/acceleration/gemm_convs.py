"""Convolutions over few output pixels run as one explicit GEMM (im2col), for small-batch sampling.

At batch 1 the UNet's lowest levels have 64, 16 and 4 pixels. cuDNN's implicit-GEMM kernels tile the
output pixels (64 per tile), so there a convolution is a single row of tiles, each walking the whole
reduction (up to 768 channels x 9 taps) alone. Unfolded into a (pixels, channels x taps) matrix, the same
convolution is a skinny GEMM that cuBLAS spreads over the GPU (split along the reduction). Same function;
only the summation order differs. Measured on an H200 (docs/PERFORMANCE.md): the compiled bf16 step went
from 3.08 to 2.95 ms, the graphed one from 5.71 to 5.53 ms.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class GemmConv2d(nn.Module):
    """`conv(x)`, computed as unfold + GEMM when the output has at most `max_pixels` pixels (batch included).

    Shapes are static under CUDA graphs and torch.compile, so each captured or compiled shape takes one path.
    The GEMM's weight is a snapshot of `conv.weight` at construction (the fast path's modules are frozen copies).
    """

    def __init__(self, conv: nn.Conv2d, max_pixels: int):
        super().__init__()
        if not gemm_compatible(conv):
            raise ValueError(f"not a plain zero-padded, ungrouped convolution: {conv}")
        self.conv = conv
        self.max_pixels = max_pixels
        # A contiguous (out, in x kh x kw) copy, made once (a channels-last weight does not flatten to a view).
        self.register_buffer("weight_matrix", conv.weight.detach().reshape(conv.out_channels, -1).contiguous())

    def extra_repr(self) -> str:
        return f"max_pixels={self.max_pixels}"

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        batch, _, height, width = x.shape
        out_h, out_w = (_output_size(size, conv.kernel_size[i], conv.stride[i], conv.padding[i], conv.dilation[i])
                        for i, size in enumerate((height, width)))
        if batch * out_h * out_w > self.max_pixels:
            return conv(x)
        if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0):
            columns = x.flatten(2)  # a view of a channels-last input: nothing to unfold
        else:
            # (B, C*kh*kw, L): the column order matches weight.flatten(1) (channel-major, then kernel rows, columns).
            columns = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
        out = F.linear(columns.transpose(1, 2), self.weight_matrix, conv.bias)  # (B, L, out channels)
        return out.transpose(1, 2).view(batch, conv.out_channels, out_h, out_w)  # channels-last strides


def gemm_compatible(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def convs_as_gemms(module: nn.Module, max_pixels: int, pointwise_max_pixels: int | None = None) -> int:
    """Wraps every compatible `nn.Conv2d` inside `module` in a `GemmConv2d` (in place); returns how many.

    1 x 1 convolutions get `pointwise_max_pixels` (default `max_pixels`): they need no unfold."""
    wrapped = 0
    for name, child in list(module.named_children()):
        if gemm_compatible(child):
            pointwise = child.kernel_size == (1, 1) and pointwise_max_pixels is not None
            setattr(module, name, GemmConv2d(child, pointwise_max_pixels if pointwise else max_pixels))
            wrapped += 1
        elif not isinstance(child, GemmConv2d):
            wrapped += convs_as_gemms(child, max_pixels, pointwise_max_pixels)
    return wrapped


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1

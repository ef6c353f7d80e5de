"""The UNet's GroupNorm32 run in the activations' own dtype, for the uncompiled fast path.

The official `GroupNorm32` upcasts a half-precision input, and here also its weight and bias, to float32
and casts the result back: five kernels a normalisation, four of them copies, 71 times a step. PyTorch's
GroupNorm kernels for bf16/fp16 inputs already accumulate the statistics and apply the affine transform
in float32 and round once at the end, so calling them directly computes the same function (the weights of
the fast path's copy are bf16 either way) with one launch instead of five. Under torch.compile Inductor
fuses those copies away, so only the uncompiled path needs this.
"""

from __future__ import annotations

from torch import nn

from uvidm_backend.models.unet import GroupNorm32


def native_group_norms(module: nn.Module) -> int:
    """Replaces every `GroupNorm32` inside `module` by a plain `nn.GroupNorm` sharing its parameters (in
    place); returns how many."""
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, GroupNorm32):
            plain = nn.GroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            plain.weight, plain.bias = child.weight, child.bias
            setattr(module, name, plain)
            replaced += 1
        else:
            replaced += native_group_norms(child)
    return replaced

"""Deep3DFaceRecon reconstruction network: one aligned 224x224 face crop -> 257 BFM coefficients.

Corresponds to `ldm.modules.recon_network.ReconNetWrapper` of UV-IDM (itself the `ReconNetWrapper`
of Deep3DFaceRecon_pytorch, `backbone_name='resnet50'`, `use_last_fc=False`). Module names follow
the official ones, so `epoch_20.pth['net_recon']` loads with `strict=True` and no renaming.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from uvidm_backend.models.resnet import resnet50

ANGLE_DIMS = 3
GAMMA_DIMS = 27  # 3 colour channels x 9 spherical-harmonics coefficients
TRANS_DIMS = 3


@dataclass(frozen=True)
class ReconNetConfig:
    """Sizes of the coefficient groups (the official `fc_dim_dict`); defaults are UV-IDM's."""

    id_dims: int = 80
    exp_dims: int = 64
    tex_dims: int = 80

    @property
    def coefficient_dims(self) -> int:
        """Width of the raw coefficient vector (257 for the defaults)."""
        return self.id_dims + self.exp_dims + self.tex_dims + ANGLE_DIMS + GAMMA_DIMS + TRANS_DIMS


@dataclass(frozen=True)
class FaceCoefficients:
    """Fitted BFM coefficients of a batch (the official `get_coeffs` dict, as typed fields).

    Shapes: id (B, id_dims), exp (B, exp_dims), tex (B, tex_dims), angle (B, 3) Euler angles,
    gamma (B, 3, 9) SH lighting (channel-major), trans (B, 3) = (tx, ty, tz).
    """

    id: Tensor
    exp: Tensor
    tex: Tensor
    angle: Tensor
    gamma: Tensor
    trans: Tensor

    @classmethod
    def from_vector(cls, vector: Tensor, config: ReconNetConfig | None = None) -> FaceCoefficients:
        """Splits a raw (B, 257) network output like `ReconNetWrapper.get_coeffs`."""
        config = config or ReconNetConfig()
        if vector.ndim != 2 or vector.shape[1] != config.coefficient_dims:
            raise ValueError(f"expected (B, {config.coefficient_dims}) coefficients, got {tuple(vector.shape)}")
        sizes = (config.id_dims, config.exp_dims, config.tex_dims, ANGLE_DIMS, GAMMA_DIMS, TRANS_DIMS)
        id_, exp, tex, angle, gamma, trans = torch.split(vector, sizes, dim=1)
        return cls(id=id_, exp=exp, tex=tex, angle=angle, gamma=gamma.reshape(-1, 3, 9), trans=trans)

    def to_vector(self) -> Tensor:
        """The inverse of `from_vector`: the (B, 257) layout of Deep3DFaceRecon coefficient files."""
        parts = (self.id, self.exp, self.tex, self.angle, self.gamma.flatten(1), self.trans)
        return torch.cat(parts, dim=1)

    def as_dict(self) -> dict[str, Tensor]:
        """The official coefficient dict (keys id, exp, tex, angle, gamma, trans)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


class ReconNet(nn.Module):
    """`ReconNetWrapper`: ResNet-50 features, then one 1x1-conv head per coefficient group.

    Input: RGB in [0, 1], (B, 3, 224, 224), no mean/std normalisation (as in Deep3DFaceRecon).
    """

    def __init__(self, config: ReconNetConfig | None = None):
        super().__init__()
        self.config = config or ReconNetConfig()
        self.backbone = resnet50()
        width = self.backbone.out_channels
        head_dims = (self.config.id_dims, self.config.exp_dims, self.config.tex_dims, ANGLE_DIMS,
                     GAMMA_DIMS, 2, 1)  # translation is split into (tx, ty) and tz heads upstream
        self.final_layers = nn.ModuleList(nn.Conv2d(width, dims, kernel_size=1, bias=True) for dims in head_dims)

    def features(self, x: Tensor) -> Tensor:
        """Backbone output after global average pooling, (B, 2048, 1, 1)."""
        return self.backbone(x)

    def coefficient_vector(self, features: Tensor) -> Tensor:
        """The concatenated head outputs for backbone `features`, flattened to (B, 257)."""
        return torch.flatten(torch.cat([layer(features) for layer in self.final_layers], dim=1), 1)

    def forward(self, x: Tensor) -> FaceCoefficients:
        return FaceCoefficients.from_vector(self.coefficient_vector(self.features(x)), self.config)

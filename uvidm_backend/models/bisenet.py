"""BiSeNet face parsing (19 CelebAMask-HQ classes), used by UV-IDM to mask the visible face texture.

Corresponds to `ldm.modules.seg_network.BiSeNet` of UV-IDM, a copy of the face-parsing.PyTorch
(zllrunning) model whose spatial path is replaced by the ResNet-18 stride-8 feature. Module names
follow the official ones, so `79999_iter.pth` loads with `strict=True` and no renaming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uvidm_backend.models.resnet import resnet18


@dataclass(frozen=True)
class BiSeNetConfig:
    """Constructor arguments of the official `BiSeNet` (the ResNet-18 init path is not needed)."""

    n_classes: int = 19


class BiSeNetLogits(NamedTuple):
    """The three logit maps of `BiSeNet.forward`, each upsampled to the input size.

    Only `logits` is used at inference; the others are the auxiliary training heads.
    """

    logits: Tensor
    logits16: Tensor
    logits32: Tensor


def global_avg_pool(x: Tensor) -> Tensor:
    """`F.avg_pool2d(x, x.size()[2:])` as written in the official modules."""
    return F.avg_pool2d(x, tuple(x.shape[2:]))


class ConvBNReLU(nn.Module):
    """`seg_network.ConvBNReLU`: bias-free conv, BatchNorm, ReLU."""

    def __init__(self, in_chan: int, out_chan: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chan, out_chan, kernel_size=ks, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chan)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class BiSeNetOutput(nn.Module):
    """`seg_network.BiSeNetOutput`: a 3x3 ConvBNReLU then a 1x1 classifier (no bias)."""

    def __init__(self, in_chan: int, mid_chan: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, mid_chan, ks=3, stride=1, padding=1)
        self.conv_out = nn.Conv2d(mid_chan, n_classes, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    """`seg_network.AttentionRefinementModule`: features reweighted by a pooled channel attention."""

    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.conv = ConvBNReLU(in_chan, out_chan, ks=3, stride=1, padding=1)
        self.conv_atten = nn.Conv2d(out_chan, out_chan, kernel_size=1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_chan)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(global_avg_pool(feat))))
        return feat * atten


class ContextPath(nn.Module):
    """`seg_network.ContextPath`: ResNet-18 with ARM heads merged top-down (nearest upsampling).

    Returns the stride-8 ResNet feature (it stands in for the spatial path) and the refined
    stride-8 and stride-16 context features.
    """

    def __init__(self):
        super().__init__()
        self.resnet = resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_head16 = ConvBNReLU(128, 128, ks=3, stride=1, padding=1)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, stride=1, padding=0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # The face-parsing ResNet-18 uses F.relu where torchvision has a ReLU module: same maths.
        r = self.resnet
        feat8 = r.layer2(r.layer1(r.stem(x)))
        feat16 = r.layer3(feat8)
        feat32 = r.layer4(feat16)

        avg_up = F.interpolate(self.conv_avg(global_avg_pool(feat32)), feat32.shape[2:], mode="nearest")
        feat32_up = F.interpolate(self.arm32(feat32) + avg_up, feat16.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(feat32_up)

        feat16_up = F.interpolate(self.arm16(feat16) + feat32_up, feat8.shape[2:], mode="nearest")
        feat16_up = self.conv_head16(feat16_up)
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    """`seg_network.FeatureFusionModule`: concat, 1x1 ConvBNReLU, squeeze-excite style residual."""

    def __init__(self, in_chan: int, out_chan: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_chan, out_chan, ks=1, stride=1, padding=0)
        self.conv1 = nn.Conv2d(out_chan, out_chan // 4, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(out_chan // 4, out_chan, kernel_size=1, bias=False)

    def forward(self, fsp: Tensor, fcp: Tensor) -> Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(global_avg_pool(feat)))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    """`seg_network.BiSeNet`: per-pixel class logits at the input resolution.

    UV-IDM feeds [0, 1] RGB without ImageNet normalisation (at 512x512); the logits are
    upsampled with bilinear `align_corners=True`.
    """

    def __init__(self, config: BiSeNetConfig | None = None):
        super().__init__()
        self.config = config or BiSeNetConfig()
        n_classes = self.config.n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: Tensor) -> BiSeNetLogits:
        size = tuple(x.shape[2:])
        feat_res8, feat_cp8, feat_cp16 = self.cp(x)
        feat_fuse = self.ffm(feat_res8, feat_cp8)
        heads = (self.conv_out(feat_fuse), self.conv_out16(feat_cp8), self.conv_out32(feat_cp16))
        return BiSeNetLogits(*(F.interpolate(h, size, mode="bilinear", align_corners=True) for h in heads))

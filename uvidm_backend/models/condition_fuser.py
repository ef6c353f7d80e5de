"""The condition fuser: turns the remapped face texture into UNet cross-attention tokens.

Re-implements `ldm.modules.recon_network.ConditionFuser`, the last stage of UV-IDM's
`Deep3dEncoder`: the partial UV texture sampled from the photo (in [-1, 1]) goes through a
ResNet stem and one stage of BasicBlocks (overall stride 8), and every pixel of the resulting
map becomes one 128-d context token for the diffusion UNet.
"""

from __future__ import annotations

from torch import Tensor, nn

from .resnet import BasicBlock, make_layer


class ConditionFuser(nn.Module):
    """Official `ConditionFuser()` (no constructor arguments officially).

    (B, 3, H, W) image in [-1, 1] -> (B, H/8 * W/8, 128) tokens in row-major (y, x) order,
    LayerNorm'ed. Any H, W works; UV-IDM uses 256x256 -> 1024 tokens.
    """

    token_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = make_layer(BasicBlock, 64, self.token_dim, blocks=3, stride=2)
        self.bn4 = nn.LayerNorm(self.token_dim)
        # conv2/bn2/conv3/bn3 are declared by the official module and stored in ldm.ckpt
        # (`cond_stage_model.conditionfuser.*`) but never used by its forward (trap 17). They
        # exist here only so that official checkpoints load with strict=True.
        self.conv2 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(self.token_dim, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 128, H/8, W/8) map before tokenisation (exposed for tests and inspection)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer1(x)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.feature_map(x).flatten(2).permute(0, 2, 1)
        return self.bn4(tokens)

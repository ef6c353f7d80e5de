"""ConditionFuser: token layout, input sizes, and the unused checkpoint-only modules."""

from __future__ import annotations

import pytest
import torch

from uvidm_backend.models.condition_fuser import ConditionFuser


@pytest.fixture(scope="module")
def fuser() -> ConditionFuser:
    torch.manual_seed(0)
    model = ConditionFuser().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("size", [(256, 256), (64, 96), (40, 56)])
def test_any_size_gives_one_token_per_8x8_cell(fuser, size):
    height, width = size
    tokens = fuser(torch.rand(2, 3, height, width) * 2 - 1)
    assert tokens.shape == (2, (height // 8) * (width // 8), 128)


def test_tokens_are_row_major_layernormed_pixels(fuser):
    x = torch.rand(2, 3, 40, 56) * 2 - 1
    tokens = fuser(x)
    features = fuser.feature_map(x)
    _, _, rows, cols = features.shape
    for y, xx in [(0, 0), (0, cols - 1), (1, 0), (rows - 1, 2), (rows - 1, cols - 1)]:
        expected = torch.nn.functional.layer_norm(features[:, :, y, xx], (128,), fuser.bn4.weight, fuser.bn4.bias)
        torch.testing.assert_close(tokens[:, y * cols + xx], expected)


def test_checkpoint_only_modules_do_not_change_the_output(fuser):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    before = fuser(x)
    state = {key: value.clone() for key, value in fuser.state_dict().items()}
    try:
        with torch.no_grad():
            for name in ("conv2", "bn2", "conv3", "bn3"):
                for parameter in getattr(fuser, name).parameters():
                    parameter.add_(1.0)
        torch.testing.assert_close(fuser(x), before, rtol=0, atol=0)
    finally:
        fuser.load_state_dict(state)

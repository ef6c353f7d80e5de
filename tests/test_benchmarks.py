"""The benchmark scripts' variant specs parse into the options they name (the scripts themselves need a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_pipeline import Variant  # noqa: E402


def test_variant_flags_set_the_fast_unet_options():
    plain = Variant.parse("bf16")
    assert plain.dtype is torch.bfloat16 and plain.compile_mode is None and not plain.reference
    assert plain.flash_small_attention and plain.timestep_table == 1000 and plain.fused_update
    variant = Variant.parse("fp16/compile/freeze/gemm256/pw1024/noflash/notable/nofuse/condgraph/c1x1")
    options = variant.unet_options
    assert options["dtype"] is torch.float16 and options["compile_mode"] == "default" and options["freeze"]
    assert options["gemm_conv_pixels"] == 256 and options["gemm_pointwise_pixels"] == 1024
    assert not options["flash_small_attention"] and options["timestep_table"] == 0
    assert not variant.fused_update and variant.condition_graph
    assert options["inductor_options"] == (("conv_1x1_as_mm", True),)
    assert Variant.parse("fp32").reference


@pytest.mark.parametrize("spec", ["bf16/bogus", "bf16/gemm", "bf16/pwx", "int8"])
def test_unknown_variant_flags_are_refused(spec):
    with pytest.raises(ValueError):
        Variant.parse(spec)

"""The fast path (reduced precision, CUDA graphs, torch.compile) computes the float32 function."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from uvidm_backend.acceleration import (
    CudaGraphed,
    FastDecoder,
    FastUNet,
    HoistedUNet,
    cast_module,
    compile_unet,
    fused_update,
    parse_dtype,
    warmed_fused_updates,
)
from uvidm_backend.acceleration.gemm_convs import GemmConv2d, convs_as_gemms
from uvidm_backend.acceleration.group_norms import native_group_norms
from uvidm_backend.acceleration.hoisted_unet import prefers_flash
from uvidm_backend.diffusion import ddim_schedule, ddim_update, dpmpp_2m_update, sample_ddim
from uvidm_backend.diffusion.dpmsolver import dpmpp_schedule, sample_dpmpp_2m
from uvidm_backend.models.attention import BasicTransformerBlock
from uvidm_backend.models.autoencoder import AutoencoderConfig, DDConfig
from uvidm_backend.models.stack import LatentDiffusionConfig, LatentDiffusionNetworks
from uvidm_backend.models.unet import GroupNorm32, ResBlock, UNetConfig

LATENT = 8
CONTEXT_LEN, CONTEXT_DIM = 6, 16


def _config() -> LatentDiffusionConfig:
    """Smaller than devtools' tiny model: CPU bf16 convolutions are slow."""
    unet = UNetConfig(image_size=LATENT, model_channels=32, attention_resolutions=(1, 2), num_res_blocks=1,
                      channel_mult=(1, 2), num_heads=2, context_dim=CONTEXT_DIM)
    autoencoder = AutoencoderConfig(embed_dim=4, ddconfig=DDConfig(resolution=2 * LATENT, ch=32, ch_mult=(1, 2),
                                                                   num_res_blocks=1))
    return LatentDiffusionConfig(unet=unet, autoencoder=autoencoder, image_size=LATENT)


def _networks(device: str = "cpu") -> LatentDiffusionNetworks:
    torch.manual_seed(0)
    networks = LatentDiffusionNetworks(_config()).eval().to(device)
    networks.scale_factor = torch.tensor(0.5, device=device)
    return networks


def _inputs(batch: int = 2, device: str = "cpu", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, LATENT, LATENT, generator=generator).to(device)
    context = torch.randn(batch, CONTEXT_LEN, CONTEXT_DIM, generator=generator).to(device)
    t = torch.tensor([999, 3, 500, 250][:batch]).to(device)
    return x, t, context


def _rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max()).item()


@pytest.fixture(scope="module")
def networks():
    return _networks()


def test_parse_dtype():
    assert parse_dtype("bf16") is torch.bfloat16 and parse_dtype("float16") is torch.float16
    assert parse_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError):
        parse_dtype("int8")


def test_cast_module_leaves_the_original(networks):
    fast = cast_module(networks.unet, torch.bfloat16, channels_last=True)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert all(p.dtype == torch.float32 for p in networks.unet.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    assert fast.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_float32_fast_unet_is_the_network(networks):
    """Without reduced precision, channels-last nor GEMM convolutions the wrapper adds nothing to the function."""
    x, t, context = _inputs()
    fast = FastUNet(networks.unet, torch.float32, channels_last=False, gemm_conv_pixels=0, timestep_table=0)
    assert torch.equal(fast(x, t, context), networks.unet(x, t, context))
    # A scalar timestep is broadcast over the batch.
    assert torch.equal(fast(x, t[:1].squeeze(), context), networks.unet(x, t[:1].expand(2), context))


@pytest.mark.parametrize("dtype, eps_tol, sample_tol", [(torch.bfloat16, 5e-2, 2e-2), (torch.float16, 1e-2, 5e-3)])
def test_reduced_precision_unet_and_samplers(networks, dtype, eps_tol, sample_tol):
    """One eps within a few bf16 ulps of float32; whole sampling runs within 2e-2 (float32 sampler arithmetic)."""
    if dtype is torch.float16 and not _cpu_half_convolutions():
        pytest.skip("no float16 convolutions on this CPU build")
    x, t, context = _inputs()
    fast = FastUNet(networks.unet, dtype)
    eps = fast(x, t, context)
    assert eps.dtype == torch.float32
    assert _rel(eps, networks.unet(x, t, context)) < eps_tol
    ddim = ddim_schedule(networks.schedule, 5, eta=1.0)
    expected = sample_ddim(networks.unet, x, context, ddim, generator=torch.Generator().manual_seed(1))
    actual = sample_ddim(fast, x, context, ddim, generator=torch.Generator().manual_seed(1))
    assert _rel(actual, expected) < sample_tol
    dpm = dpmpp_schedule(networks.schedule, 5)
    assert _rel(sample_dpmpp_2m(fast, x, context, dpm), sample_dpmpp_2m(networks.unet, x, context, dpm)) < sample_tol


def _cpu_half_convolutions() -> bool:
    try:
        torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float16), torch.ones(1, 1, 3, 3,
                                                                                          dtype=torch.float16))
    except RuntimeError:
        return False
    return True


def test_fast_decoder(networks):
    latent = _inputs()[0]
    expected = networks.decode_latent(latent)
    assert torch.equal(FastDecoder(networks, torch.float32, channels_last=False)(latent), expected)
    image = FastDecoder(networks, "bf16")(latent)
    assert image.dtype == torch.float32 and image.shape == expected.shape
    assert _rel(image, expected) < 3e-2
    assert networks.autoencoder.decoder.conv_in.weight.dtype == torch.float32


def test_cuda_graphed_calls_directly_off_cuda():
    calls = []

    def fn(a: torch.Tensor) -> torch.Tensor:
        calls.append(a)
        return a * 2

    graphed = CudaGraphed(fn)
    assert torch.equal(graphed(torch.ones(3)), torch.full((3,), 2.0))
    assert len(calls) == 1 and graphed.captured_shapes == []


# -- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_graph_replays_the_eager_function():
    networks = _networks("cuda")
    eager = FastUNet(networks.unet, torch.bfloat16, cuda_graph=False)
    graphed = FastUNet(networks.unet, torch.bfloat16)
    previous = None
    for batch, seed in [(2, 0), (2, 1), (3, 2), (2, 3)]:  # new inputs, a second shape, back to the first
        x, t, context = _inputs(batch, "cuda", seed)
        expected = eager(x, t, context)
        first = graphed(x, t, context)
        second = graphed(x, t, context)
        assert _rel(first, expected) < 1e-2  # same kernels; stale static inputs would be far off
        assert torch.equal(first, second) and first.data_ptr() != second.data_ptr()  # clones, not aliases
        assert previous is None or previous.shape != first.shape or not torch.equal(previous, first)
        previous = first
    assert sorted(s[0] for s in graphed._graphed.captured_shapes) == [(2, 4, LATENT, LATENT), (3, 4, LATENT, LATENT)]


@pytest.mark.gpu
def test_fast_sampling_on_gpu_matches_float32():
    networks = _networks("cuda")
    x, _, context = _inputs(2, "cuda")
    fast = compile_unet(networks.unet, "bf16", batch=2, context_len=CONTEXT_LEN)
    decode = FastDecoder(networks, "bf16")
    ddim = ddim_schedule(networks.schedule, 10, eta=1.0)
    expected = sample_ddim(networks.unet, x, context, ddim, generator=torch.Generator("cuda").manual_seed(5))
    actual = sample_ddim(fast, x, context, ddim, generator=torch.Generator("cuda").manual_seed(5))
    assert _rel(actual, expected) < 2e-2
    assert _rel(decode(actual), networks.decode_latent(expected)) < 2e-2


@pytest.mark.gpu
@pytest.mark.slow
def test_compiled_unet_on_gpu():
    networks = _networks("cuda")
    x, t, context = _inputs(2, "cuda")
    fast = compile_unet(networks.unet, "bf16", batch=2, context_len=CONTEXT_LEN, compile_mode="default")
    assert _rel(fast(x, t, context), networks.unet(x, t, context)) < 5e-2


# -- per-generation constants hoisted out of the step -----------------------------------------------------


def test_hoisted_unet_is_the_network(networks):
    """Cross-attention keys/values once per context, fused projections: the same float32 function."""
    unet = networks.unet
    hoisted = HoistedUNet(unet)
    assert len(hoisted.resblocks) == sum(isinstance(m, ResBlock) for m in unet.modules())
    assert len(hoisted.transformer_blocks) == sum(isinstance(m, BasicTransformerBlock) for m in unet.modules())
    x, t, context = _inputs(batch=2)
    kv = hoisted.context_kv(context)
    assert kv.shape == (2, CONTEXT_LEN, sum(2 * b.attn2.to_k.out_features for b in hoisted.transformer_blocks))
    expected = unet(x, t, context)
    torch.testing.assert_close(hoisted(x, t, kv), expected, rtol=1e-5, atol=1e-5)
    # Each sample of the batch keeps its own context: swapping contexts swaps the outputs.
    swapped = hoisted(x, t, hoisted.context_kv(context.flip(0)))
    assert not torch.allclose(swapped, expected, atol=1e-3)
    torch.testing.assert_close(swapped, unet(x, t, context.flip(0)), rtol=1e-5, atol=1e-5)


def test_fast_unet_computes_keys_and_values_once_per_context(networks):
    fast = FastUNet(networks.unet, torch.float32, channels_last=False)
    x, t, context = _inputs()
    calls = []
    context_kv = fast.hoisted.context_kv
    fast.hoisted.context_kv = lambda c: calls.append(c) or context_kv(c)
    first = fast(x, t, context)
    fast(x, t.flip(0), context)
    assert len(calls) == 1
    other = context + 1  # a new context tensor: new keys and values
    torch.testing.assert_close(fast(x, t, other), networks.unet(x, t, other), rtol=1e-5, atol=1e-5)
    assert len(calls) == 2
    torch.testing.assert_close(first, networks.unet(x, t, context), rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.without_graph(x, t, context), first)
    plain = FastUNet(networks.unet, torch.float32, channels_last=False, hoist=False, gemm_conv_pixels=0)
    assert plain.hoisted is None and torch.equal(plain(x, t, context), networks.unet(x, t, context))


@pytest.mark.gpu
def test_cuda_graph_constant_inputs_are_copied_when_replaced():
    graphed = CudaGraphed(lambda a, b: a + b, constant_inputs=(1,))
    a = torch.ones(4, device="cuda")
    b = torch.full((4,), 10.0, device="cuda")
    assert torch.equal(graphed(a, b), torch.full((4,), 11.0, device="cuda"))
    assert torch.equal(graphed(a * 2, b), torch.full((4,), 12.0, device="cuda"))  # ordinary input copied
    assert torch.equal(graphed(a, b * 3), torch.full((4,), 31.0, device="cuda"))  # a new constant tensor


# -- small convolutions as GEMMs ---------------------------------------------------------------------------


@pytest.mark.parametrize("conv", [nn.Conv2d(6, 5, 3, padding=1), nn.Conv2d(6, 5, 3, stride=2, padding=1),
                                  nn.Conv2d(6, 5, 1), nn.Conv2d(6, 5, (3, 1), padding=(2, 0), dilation=2, bias=False)],
                         ids=["3x3", "stride 2", "1x1", "dilated, no bias"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gemm_conv_is_the_convolution(conv, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    expected = conv(x)
    conv_calls = []
    conv.register_forward_hook(lambda *args: conv_calls.append(1))
    actual = GemmConv2d(conv, max_pixels=32)(x)
    assert actual.shape == expected.shape and conv_calls == []  # a GEMM, not the convolution
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # Above the threshold (2 x 4 x 4 = 32 output pixels at most) it is the convolution itself.
    assert torch.equal(GemmConv2d(conv, max_pixels=7)(x), expected) and conv_calls == [1]


def test_convs_as_gemms_wraps_the_plain_convolutions(networks):
    unet = cast_module(networks.unet, torch.float32)
    convs = sum(type(m) is nn.Conv2d for m in unet.modules())
    assert convs_as_gemms(unet, 32) == convs > 0
    assert not any(type(m) is nn.Conv2d and not isinstance(p, GemmConv2d)
                   for p in unet.modules() for m in p.children())
    with pytest.raises(ValueError, match="grouped"):
        GemmConv2d(nn.Conv2d(4, 4, 3, groups=2), 16)
    split = cast_module(networks.unet, torch.float32)
    convs_as_gemms(split, 16, pointwise_max_pixels=1024)
    limits = {(m.conv.kernel_size, m.max_pixels) for m in split.modules() if isinstance(m, GemmConv2d)}
    assert limits == {((1, 1), 1024), ((3, 3), 16)}
    for compile_mode, pointwise in [(None, 1024), ("default", 64)]:  # measured defaults: see FastUNet
        fast = FastUNet(networks.unet, torch.float32, compile_mode=compile_mode, cuda_graph=False)
        limits = {(m.conv.kernel_size, m.max_pixels) for m in fast.unet.modules() if isinstance(m, GemmConv2d)}
        assert limits == {((1, 1), pointwise), ((3, 3), 64)}
    x, t, context = _inputs()  # batch 2 of 8 x 8: the 4 x 4 level (32 pixels) runs as GEMMs, the 8 x 8 one not
    fast = FastUNet(networks.unet, torch.float32, channels_last=False, gemm_conv_pixels=32)
    actual, expected = fast(x, t, context), networks.unet(x, t, context)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# -- attention backends ----------------------------------------------------------------------------------------


def test_flash_is_preferred_for_few_queries_and_small_cross_attention():
    assert prefers_flash(16, 16) and prefers_flash(16, 1024) and prefers_flash(64, 1024) and prefers_flash(256, 1024)
    assert not prefers_flash(64, 64) and not prefers_flash(256, 256) and not prefers_flash(1024, 1024)
    assert not prefers_flash(1024, 4096)


def test_small_attention_backends_compute_the_same_unet(networks):
    x, t, context = _inputs()
    plain = HoistedUNet(networks.unet)
    flash = HoistedUNet(networks.unet, flash_small_attention=True)
    kv = plain.context_kv(context)
    torch.testing.assert_close(flash(x, t, kv), plain(x, t, kv), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_small_attention_backends_on_gpu():
    networks = _networks("cuda")
    x, t, context = _inputs(1, "cuda")
    flash = FastUNet(networks.unet, torch.bfloat16, flash_small_attention=True)
    assert _rel(flash(x, t, context), networks.unet(x, t, context)) < 5e-2


# -- time projections from a table -----------------------------------------------------------------------------


def test_timestep_table_is_the_time_projections(networks):
    x, t, context = _inputs()
    plain = HoistedUNet(networks.unet)
    tabled = HoistedUNet(networks.unet, timestep_table=1000)
    assert tabled.emb_table.shape == (1000, sum(tabled.emb_sizes))
    steps = torch.tensor([0, 1, 500, 999])
    torch.testing.assert_close(tabled.emb_table[steps], plain.time_projections(steps), rtol=1e-5, atol=1e-5)
    kv = plain.context_kv(context)
    torch.testing.assert_close(tabled(x, t, kv), plain(x, t, kv), rtol=1e-5, atol=1e-5)
    fast = FastUNet(networks.unet, torch.bfloat16, timestep_table=1000)
    assert fast.hoisted.emb_table.dtype == torch.bfloat16
    assert _rel(fast(x, t, context), networks.unet(x, t, context)) < 5e-2


# -- the sampler update fused into one kernel -------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fused_updates_sample_the_same_latents(networks, device):
    """torch.compile (Inductor: C++ on the CPU, Triton on the GPU) of each update: one graph for every step."""
    from torch._dynamo.utils import counters

    networks = networks if device == "cpu" else _networks("cuda")
    x, _, context = _inputs(2, device)
    torch._dynamo.reset()
    counters.clear()
    # TF32 convolutions (cuDNN's float32 default) would amplify the update's last-bit differences.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        _sample_both_ways(networks, x, context, device)
    assert counters["stats"]["unique_graphs"] == 2  # one per update function


def _sample_both_ways(networks, x, context, device):
    for steps in (6, 4):  # a second step count reuses the compiled update
        for sample, schedule, update in [(sample_ddim, ddim_schedule(networks.schedule, steps, eta=1.0), ddim_update),
                                         (sample_dpmpp_2m, dpmpp_schedule(networks.schedule, steps), dpmpp_2m_update)]:
            expected = sample(networks.unet, x, context, schedule,
                              generator=torch.Generator(device).manual_seed(steps))
            actual = sample(networks.unet, x, context, schedule, generator=torch.Generator(device).manual_seed(steps),
                            update=fused_update(update))
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_warmed_fused_updates_are_compiled_at_start_up():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    updates = warmed_fused_updates((1, 4, LATENT, LATENT), torch.device("cpu"))
    assert updates["ddim"] is fused_update(ddim_update) and updates["dpmpp"] is fused_update(dpmpp_2m_update)
    assert counters["stats"]["unique_graphs"] == 2
    networks = _networks()
    x, _, context = _inputs(1)
    with torch.inference_mode():  # as the pipeline samples (inference tensors): the warm-up's compilations serve it
        sample_ddim(networks.unet, x.clone(), context, ddim_schedule(networks.schedule, 4, eta=1.0),
                    update=updates["ddim"])
    assert counters["stats"]["unique_graphs"] == 2


def test_compile_cache_lives_in_the_user_cache_folder(tmp_path):
    """In a fresh process (Inductor reads the variable once): the fused updates' compiled code lands there,
    and a folder the user chose wins."""
    show_cache = ("from uvidm_backend.acceleration.compile_cache import use_persistent_compile_cache\n"
                  "print(use_persistent_compile_cache())\n")
    script = show_cache + ("import torch\n"
                           "from uvidm_backend.acceleration import warmed_fused_updates\n"
                           "warmed_fused_updates((1, 4, 8, 8), torch.device('cpu'))\n")
    env = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path / "home"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    folder = Path(run.stdout.split()[-1])
    assert folder == tmp_path / "cache" / "uvidm" / "torchinductor" or sys.platform in ("win32", "darwin")
    assert any(folder.rglob("*.py"))  # Inductor's generated code for the two updates
    chosen = tmp_path / "chosen"
    run = subprocess.run([sys.executable, "-c", show_cache], capture_output=True, text=True,
                         env={**env, "TORCHINDUCTOR_CACHE_DIR": str(chosen)}, timeout=600)
    assert run.returncode == 0 and Path(run.stdout.split()[-1]) == chosen


# -- GroupNorm in the activations' dtype -----------------------------------------------------------------------


def test_native_group_norms_replace_the_upcasting_ones(networks):
    unet = cast_module(networks.unet, torch.float32)
    upcasting = sum(isinstance(m, GroupNorm32) for m in unet.modules())
    assert native_group_norms(unet) == upcasting > 0
    assert not any(isinstance(m, GroupNorm32) for m in unet.modules())
    x, t, context = _inputs()
    # float32: exactly the network (GroupNorm32 only differs for half inputs)
    assert torch.equal(unet(x, t, context), networks.unet(x, t, context))
    fast = FastUNet(networks.unet, torch.bfloat16, native_group_norm=True)
    assert fast.unet.out[0].weight.dtype == torch.bfloat16
    assert _rel(fast(x, t, context), networks.unet(x, t, context)) < 5e-2

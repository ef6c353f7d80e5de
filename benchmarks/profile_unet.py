"""Where one step of the fast UNet spends its GPU time: kernel count and the top kernels, printed.

    PYTHONPATH=. python benchmarks/profile_unet.py [--batch 1] [--compile] [--freeze] [--nohoist] [--top 25]
        [--cudnn-benchmark] [--families] [--sdpa] [--convs] [--gemm-conv-pixels 64]

The released UNet configuration with random weights, bf16, hoisted (`HoistedUNet`) unless `--nohoist`,
optionally through torch.compile. The profiled function runs eagerly (no CUDA graph) so that every
kernel shows up on its own; the replayed graph of the same function is timed beside it, which is
what the samplers run. Kernel times are the same in both; the graph removes the launch gaps.
`--cudnn-benchmark` lets cuDNN time its convolution algorithms instead of picking by heuristics;
`--families` adds the kernel count and time per kernel family (Inductor's pointwise / reduction /
persistent-reduction kernels, cuDNN convolutions, GEMMs, attention, memsets, copies); `--sdpa` times each
`scaled_dot_product_attention` backend on the attention shapes of this UNet (in CUDA graphs); `--convs`
times every distinct convolution of a step both ways, cuDNN and unfold + GEMM (`GemmConv2d`), in CUDA graphs.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics

import torch
from bench_pipeline import profile_steps, unet_step_ms  # this script's folder is on sys.path
from torch.nn.attention import SDPBackend, sdpa_kernel

from uvidm_backend.acceleration import FastUNet, cast_module
from uvidm_backend.acceleration.gemm_convs import GemmConv2d, gemm_compatible
from uvidm_backend.models.unet import UNetConfig, UNetModel


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--nohoist", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cudnn-benchmark", action="store_true")
    parser.add_argument("--families", action="store_true")
    parser.add_argument("--sdpa", action="store_true")
    parser.add_argument("--convs", action="store_true")
    parser.add_argument("--gemm-conv-pixels", type=int, default=64, help="FastUNet's gemm_conv_pixels (0: cuDNN only)")
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(0)
    config = UNetConfig()
    if args.sdpa:
        time_sdpa_backends(config, args.batch, device)
    unet = UNetModel(config).eval().to(device)
    x = torch.randn(args.batch, config.in_channels, config.image_size, config.image_size, device=device)
    t = torch.full((args.batch,), 500, dtype=torch.long, device=device)
    context = torch.randn(args.batch, 1024, config.context_dim, device=device)
    if args.convs:
        time_convolutions(unet, x, t, context)
    mode = "default" if args.compile else None
    options = dict(compile_mode=mode, freeze=args.freeze, hoist=not args.nohoist,
                   gemm_conv_pixels=args.gemm_conv_pixels)
    fast = FastUNet(unet, torch.bfloat16, **options)
    steps = 5
    prof, kernels = profile_steps(fast, x, t, context, steps)
    gpu_ms = sum(e.device_time for e in kernels) / 1000 / steps
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, batch {args.batch}, {options}, "
          f"cudnn.benchmark {args.cudnn_benchmark}")
    print(f"kernels per step: {len(kernels) / steps:.0f}, summed kernel time per step: {gpu_ms:.3f} ms")
    replays = [unet_step_ms(fast, x, t, context, device, runs=20) for _ in range(3)]
    print(f"graph replay per step: {statistics.median(replays):.3f} ms")
    if args.families:
        print_families(kernels, steps)
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=args.top, max_name_column_width=90))


FAMILIES = (("memset", "memset"), ("triton_poi", "inductor pointwise"), ("triton_red", "inductor reduction"),
            ("triton_per", "inductor persistent reduction"), ("triton_", "inductor other"),
            ("attention", "attention"), ("flash", "attention"), ("fmha", "attention"), ("conv", "convolution"),
            ("xmma", "convolution (xmma)"), ("gemm", "GEMM"), ("cutlass", "GEMM (cutlass)"), ("nvjet", "GEMM (nvjet)"),
            ("copy", "copy"), ("elementwise", "aten elementwise"), ("reduce", "aten reduction"))


def family(name: str) -> str:
    lowered = name.lower()
    return next((label for key, label in FAMILIES if key in lowered), "other")


def print_families(kernels, steps: int) -> None:
    count, time_us = collections.Counter(), collections.Counter()
    for kernel in kernels:
        count[family(kernel.name)] += 1
        time_us[family(kernel.name)] += kernel.device_time
    print("kernel family | per step | µs per step | µs each")
    for label, _ in time_us.most_common():
        each = time_us[label] / count[label]
        print(f"{label} | {count[label] / steps:.0f} | {time_us[label] / steps:.0f} | {each:.1f}")


def time_sdpa_backends(config: UNetConfig, batch: int, device: torch.device, context_len: int = 1024) -> None:
    """µs per call of each SDPA backend, bf16, on the self- and cross-attention shapes of every UNet level."""
    backends = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                SDPBackend.MATH)
    print("tokens | keys | heads x dim | " + " | ".join(b.name for b in backends))
    for level, mult in enumerate(config.channel_mult):
        if 2**level not in config.attention_resolutions:
            continue
        channels = config.model_channels * mult
        tokens = (config.image_size // 2**level) ** 2
        heads = config.num_heads
        for keys in (tokens, context_len):
            q = torch.randn(batch, heads, tokens, channels // heads, device=device, dtype=torch.bfloat16)
            k = torch.randn(batch, heads, keys, channels // heads, device=device, dtype=torch.bfloat16)
            cells = []
            for backend in backends:
                try:
                    cells.append(f"{_graph_us(functools.partial(_sdpa, backend, q, k)):.1f}")
                except RuntimeError as error:
                    cells.append(f"n/a ({str(error).splitlines()[0][:40]})")
            print(f"{tokens} | {keys} | {heads} x {channels // heads} | " + " | ".join(cells))


def time_convolutions(unet: UNetModel, x, t, context) -> None:
    """µs per call of each distinct convolution of a bf16 channels-last step, on cuDNN and as unfold + GEMM."""
    fast = cast_module(unet, torch.bfloat16, channels_last=True)
    shapes: collections.Counter = collections.Counter()
    convs: dict[tuple, torch.nn.Conv2d] = {}

    def record(conv, inputs, _output):
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, tuple(inputs[0].shape[2:]))
        shapes[key] += 1
        convs.setdefault(key, conv)

    hooks = [m.register_forward_hook(record) for m in fast.modules() if gemm_compatible(m)]
    fast(x.bfloat16(), t, context.bfloat16())
    for hook in hooks:
        hook.remove()
    print("in | out | kernel | stride | input | per step | cuDNN µs | GEMM µs")
    saved = 0.0
    for key, count in sorted(shapes.items(), key=lambda item: -item[0][4][0]):
        conv = convs[key]
        inp = torch.randn(x.shape[0], key[0], *key[4], device=x.device, dtype=torch.bfloat16)
        inp = inp.contiguous(memory_format=torch.channels_last)
        cudnn_us = _graph_us(functools.partial(conv, inp))
        gemm_us = _graph_us(functools.partial(GemmConv2d(conv, max_pixels=1 << 30), inp))
        saved += count * max(0.0, cudnn_us - gemm_us)
        print(f"{key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {count} | {cudnn_us:.1f} | {gemm_us:.1f}")
    print(f"µs per step saved by the faster of the two for every convolution: {saved:.0f}")


def _sdpa(backend, q, k):
    with sdpa_kernel([backend]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, k)


def _graph_us(fn, calls: int = 50) -> float:
    fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / (5 * calls)


if __name__ == "__main__":
    main()

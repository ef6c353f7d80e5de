"""Where one step of the fast UNet spends its GPU time: kernel count and the top kernels, printed.

    PYTHONPATH=. python benchmarks/profile_unet.py [--batch 1] [--compile] [--freeze] [--nohoist] [--top 25]

The released UNet configuration with random weights, bf16, hoisted (`HoistedUNet`) unless `--nohoist`,
optionally through torch.compile. The profiled function runs eagerly (no CUDA graph) so that every
kernel shows up on its own; the replayed graph of the same function is timed beside it, which is
what the samplers run. Kernel times are the same in both; the graph removes the launch gaps.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from bench_pipeline import unet_step_ms  # this script's folder is on sys.path
from torch.profiler import ProfilerActivity, profile

from uvidm_backend.acceleration import FastUNet
from uvidm_backend.models.unet import UNetConfig, UNetModel


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--nohoist", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    config = UNetConfig()
    unet = UNetModel(config).eval().to(device)
    x = torch.randn(args.batch, config.in_channels, config.image_size, config.image_size, device=device)
    t = torch.full((args.batch,), 500, dtype=torch.long, device=device)
    context = torch.randn(args.batch, 1024, config.context_dim, device=device)
    mode = "default" if args.compile else None
    options = dict(compile_mode=mode, freeze=args.freeze, hoist=not args.nohoist)
    fast = FastUNet(unet, torch.bfloat16, **options)
    for _ in range(3):
        fast.without_graph(x, t, context)
    torch.cuda.synchronize()
    steps = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fast.without_graph(x, t, context)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    gpu_ms = sum(e.device_time for e in kernels) / 1000 / steps
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, batch {args.batch}, {options}")
    print(f"kernels per step: {len(kernels) / steps:.0f}, summed kernel time per step: {gpu_ms:.3f} ms")
    replays = [unet_step_ms(fast, x, t, context, device, runs=20) for _ in range(3)]
    print(f"graph replay per step: {statistics.median(replays):.3f} ms")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=args.top, max_name_column_width=90))


if __name__ == "__main__":
    main()

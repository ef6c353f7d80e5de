"""Where a sampling run of the fast path loses GPU time: busy kernel time against wall time, and the gaps.

    PYTHONPATH=. python benchmarks/profile_sampler.py [--sampler dpmpp] [--steps 20] [--compile] [--no-fused]
        [--trace trace.json]

The released configuration with random weights, batch 1, the fast UNet with its defaults (graph mode unless
`--compile`), the sampler update fused unless `--no-fused`. One warm run is profiled (CPU and CUDA): the
GPU's idle gaps between kernels are summed, and the largest are printed with the CPU operation that was
running when each gap ended (what the GPU was waiting for).
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from torch.profiler import ProfilerActivity, profile

from uvidm_backend.acceleration import FastUNet, fused_update
from uvidm_backend.diffusion import ddim_schedule, ddim_update, dpmpp_2m_update, sample_ddim
from uvidm_backend.diffusion.dpmsolver import dpmpp_schedule, sample_dpmpp_2m
from uvidm_backend.models.stack import LatentDiffusionNetworks


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler", default="dpmpp", choices=["ddim", "dpmpp"])
    parser.add_argument("--steps", type=int)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-fused", action="store_true")
    parser.add_argument("--gaps", type=int, default=15, help="largest gaps to print")
    parser.add_argument("--trace", help="also write a Chrome trace here")
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    with device:
        networks = LatentDiffusionNetworks().eval()
    unet = FastUNet(networks.unet, torch.bfloat16, compile_mode="default" if args.compile else None,
                    freeze=args.compile, timestep_table=networks.config.timesteps)
    if args.sampler == "ddim":
        sample, schedule, update = sample_ddim, ddim_schedule(networks.schedule, args.steps or 50, 1.0), ddim_update
    else:
        sample, schedule, update = sample_dpmpp_2m, dpmpp_schedule(networks.schedule, args.steps or 20), dpmpp_2m_update
    sample = functools.partial(sample, update=update if args.no_fused else fused_update(update))
    x_T = torch.randn(1, 4, 32, 32, device=device)
    tokens = networks.condition_fuser(torch.rand(1, 3, 256, 256, device=device) * 2 - 1)
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):
        sample(unet, x_T, tokens.clone(), schedule, generator=generator)
    torch.cuda.synchronize()
    context = tokens.clone()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        sample(unet, x_T, context, schedule, generator=generator)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - started) * 1e3
    if args.trace:
        prof.export_chrome_trace(args.trace)
    events = prof.events()
    kernels = sorted((e for e in events if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    cpu_ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    busy_ms = sum(e.time_range.end - e.time_range.start for e in kernels) / 1e3
    span_ms = (kernels[-1].time_range.end - kernels[0].time_range.start) / 1e3
    gaps = [(b.time_range.start - a.time_range.end, a, b) for a, b in zip(kernels, kernels[1:], strict=False)]
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.sampler} "
          f"{'compile' if args.compile else 'graph'}, fused update {not args.no_fused}")
    lead_ms = (kernels[0].time_range.start - min(e.time_range.start for e in cpu_ops)) / 1e3
    print(f"wall {wall_ms:.2f} ms (profiled), GPU span {span_ms:.2f} ms, kernel time {busy_ms:.2f} ms, "
          f"{len(kernels)} kernels, first kernel {lead_ms:.2f} ms after the first CPU op")
    for limit in (2, 5, 20):
        large = [g for g, _, _ in gaps if g > limit]
        print(f"gaps over {limit} µs: {len(large)}, {sum(large) / 1e3:.2f} ms")
    print("largest gaps: µs | kernel before | kernel after | CPU ops running when it ended")
    for gap, before, after in sorted(gaps, key=lambda g: -g[0])[:args.gaps]:
        running = [e.name for e in cpu_ops if e.time_range.start <= after.time_range.start <= e.time_range.end]
        print(f"{gap:.1f} | {before.name[:50]} | {after.name[:50]} | {running[-3:]}")


if __name__ == "__main__":
    main()

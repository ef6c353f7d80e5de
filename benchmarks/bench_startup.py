"""Start-up of the compiled fast UNet: seconds from a loaded network to its first replayed step.

    PYTHONPATH=. python benchmarks/bench_startup.py [--no-freeze] [--tiny] [--device cuda]

Run it twice: the first run fills torch.compile's caches (`use_persistent_compile_cache`, or the folder in
TORCHINDUCTOR_CACHE_DIR), the second shows the start-up with warm caches, which is what `uvidm serve
--fast compile` pays after its first start. Inductor's weight freezing bypasses its AOTAutograd cache, so
`--no-freeze` shows what that costs at start-up (and `bench_pipeline.py --fast bf16/compile` what it costs
per step).
`--tiny` uses the development configuration (a smoke test on the CPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from uvidm_backend.acceleration import compile_unet
from uvidm_backend.acceleration.compile_cache import use_persistent_compile_cache
from uvidm_backend.devtools.tiny import tiny_ldm_config
from uvidm_backend.models.stack import LatentDiffusionNetworks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-freeze", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    cache = use_persistent_compile_cache()
    device = torch.device(args.device)
    torch.manual_seed(0)
    with device:
        networks = LatentDiffusionNetworks(tiny_ldm_config() if args.tiny else None).eval()
    config = networks.config
    started = time.perf_counter()
    with torch.inference_mode():
        compile_unet(networks.unet, torch.bfloat16, batch=1, latent_size=config.image_size,
                     context_len=config.context_tokens, compile_mode="default",
                     freeze=not args.no_freeze,
                     timestep_table=config.timesteps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch "
          f"{torch.__version__}, freeze {not args.no_freeze}, cache {cache}: "
          f"compiled and captured in "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
